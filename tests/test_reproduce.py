"""`ssl-zoo reproduce`: the digits synth recipe's whole pipeline at toy scale on the embedded data
(decoder stage -> pre-training -> its declared protocols -> results vs paper -> card -> push to the
test Hub of tests/hub_server.py), stage by stage, interrupted and continued; and `ssl-zoo push --results`."""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import constants
from huggingface_hub.utils import disable_progress_bars

from ssl_zoo import hub as H
from ssl_zoo.cli import main as cli_main
from ssl_zoo.recipe import EvalProtocol, PaperResult, Recipe, get_recipe

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402

TOKEN = "hf_test_secret_do_not_print_1234"
RECIPE = "moco_v2_synth_r18_digits"
# tiny backbone, queue, bank and decoder; one decoder epoch; two pre-training steps; one linear-probe epoch
TOY = ["--epochs", "1", "--max-steps", "2", "--batch-size", "16", "--eval-epochs", "1", "--num-workers", "0",
       "--set", "arch=test_resnet", "--set", "model_args={}", "--set", "bank_size=64",
       "--set", 'base_args={"queue_size": 64, "proj_dim": 16, "temperature": 0.2, "momentum": 0.99}',
       "--set", "decoder_channels=[8, 8, 8, 8, 8]", "--set", "decoder_pretrain_epochs=1"]
PROTOCOLS = ["linear_100", "linear_50", "linear_20", "retrieval", "knn"]


def reproduce(out: Path, *extra: str) -> int:
    return cli_main(["reproduce", RECIPE, "--output", str(out), *TOY, *extra])


def events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "reproduce.jsonl").read_text().splitlines()]


def stamps(out: Path) -> dict[str, int]:
    """mtime of every file the pipeline produces (its own state and log excepted)."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("reproduce.json", "reproduce.jsonl")}


@pytest.fixture(scope="module")
def server():
    disable_progress_bars()
    with HubServer() as hub, pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "ENDPOINT", hub.url)
        mp.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        mp.setattr(constants, "HF_HUB_DISABLE_XET", True)
        mp.setattr(constants, "HF_HUB_OFFLINE", False)
        mp.setenv("HF_TOKEN", TOKEN)
        yield hub


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One toy reproduction, built stage by stage with an interruption, as a user would continue it."""
    from ssl_zoo.methods.synth import SynthPairs

    out = tmp_path_factory.mktemp("repro") / "run"
    log: dict[str, list[dict]] = {}
    files: dict[str, set[str]] = {}

    def step(name: str, *extra: str, expect: int = 0) -> None:
        before = len(events(out)) if (out / "reproduce.jsonl").is_file() else 0
        assert reproduce(out, *extra) == expect
        log[name] = events(out)[before:]
        files[name] = set(stamps(out))  # what the folder holds after this invocation

    # 1. only the decoder stage
    step("decoder", "--stop-after", "decoder_pretrain")
    # 2. pre-training, interrupted (Ctrl-C) after its first optimiser step: exit code 3, checkpoint kept
    original = SynthPairs.after_optimizer_step

    def stop_once(self, progress):
        original(self, progress)
        if not getattr(self, "_stopped", False):
            self._stopped = True
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SynthPairs, "after_optimizer_step", stop_once)
        step("interrupted", expect=3)
    # 3. continue; stop after pre-training
    step("pretrain", "--stop-after", "pretrain")
    # 4. the rest: evaluation, report, card
    step("rest")
    return out, log, files


def statuses(evts: list[dict]) -> dict[str, str]:
    return {e["stage"]: e["status"] for e in evts}


def test_pipeline_runs_in_stages_and_continues_after_an_interruption(run):
    out, log, files = run
    assert statuses(log["decoder"]) == {"decoder_pretrain": "ran"}
    assert "decoder_pretrain/decoder.safetensors" in files["decoder"]
    assert not {"checkpoint.pt", "model.safetensors"} & files["decoder"]
    assert statuses(log["interrupted"]) == {"decoder_pretrain": "skipped", "pretrain": "interrupted"}
    assert "checkpoint.pt" in files["interrupted"] and "model.safetensors" not in files["interrupted"]
    resumed = statuses(log["pretrain"])
    assert resumed == {"decoder_pretrain": "skipped", "pretrain": "ran"}
    assert "(resumed)" in log["pretrain"][-1]["detail"] and log["pretrain"][-1]["detail"].startswith("2 steps")
    assert "model.safetensors" in files["pretrain"] and not any(f.startswith("eval/") for f in files["pretrain"])
    rest = statuses(log["rest"])
    assert rest["pretrain"] == "skipped"
    assert [rest[f"evaluate:{k}"] for k in PROTOCOLS] == ["ran"] * 5
    assert rest["report"] == rest["card"] == "ran" and "push" not in rest


def test_results_json_markdown_and_card(run):
    out = run[0]
    weights_sha = H.sha256_file(out / "model.safetensors")
    for key in PROTOCOLS:
        result = json.loads((out / "eval" / f"{key}.json").read_text())
        assert result["model"]["source"] == "local" and result["model"]["weights_sha256"] == weights_sha
    fractions = [json.loads((out / "eval" / f"linear_{p}.json").read_text())["settings"]["label_fraction"]
                 for p in (100, 50, 20)]
    assert fractions == [1.0, 0.5, 0.2]
    linear = json.loads((out / "eval" / "linear_20.json").read_text())
    assert linear["settings"]["epochs"] == 1 and linear["dataset"]["num_train"] < 0.25 * 1257

    results = json.loads((out / "results.json").read_text())
    assert results["weights_sha256"] == weights_sha
    rows = {(r["protocol"], r["metric"]): r for r in results["rows"]}
    assert set(rows) >= {("linear_100", "top1"), ("linear_50", "top1"), ("linear_20", "top1"), ("retrieval", "rank1"),
                         ("retrieval", "rank5"), ("retrieval", "mAP"), ("knn", "top1_k20")}
    assert rows["retrieval", "mAP"]["ours"] == round(json.loads((out / "eval" / "retrieval.json").read_text())
                                                      ["metrics"]["mAP"], 2)
    assert all(r["paper"] is None for r in rows.values())  # the paper reports nothing on digits
    table = (out / "results.md").read_text()
    assert table.startswith("| protocol | metric | ours | paper | paper source |") and "| retrieval | mAP |" in table

    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    entries = meta["model-index"][0]["results"]
    names = {m["name"]: (m["value"], e["dataset"]["split"]) for e in entries for m in e["metrics"]}
    assert {"linear_top1", "linear_top1_50pct_labels", "linear_top1_20pct_labels", "retrieval_mAP",
            "knn_top1_k20"} <= set(names)
    assert all(split == "test" for _, split in names.values())
    assert all(round(v, 2) == v for v, _ in names.values())
    assert "## Reproduction" in card and "| retrieval | mAP |" in card


def test_second_invocation_only_reports(run, capsys):
    out = run[0]
    before, n = stamps(out), len(events(out))
    capsys.readouterr()
    assert reproduce(out) == 0
    new = events(out)[n:]
    assert {e["status"] for e in new} == {"skipped"}
    assert [e["stage"] for e in new] == ["decoder_pretrain", "pretrain", *[f"evaluate:{k}" for k in PROTOCOLS],
                                         "report", "card"]
    assert stamps(out) == before  # nothing trained, evaluated or written again
    assert "| knn | top1_k20 |" in capsys.readouterr().out  # the report is shown


def test_other_options_on_the_same_folder_are_refused(run, capsys):
    out = run[0]
    assert cli_main(["reproduce", RECIPE, "--output", str(out), *TOY[:-2]]) == 2  # without decoder_pretrain_epochs=1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other options (recipe differ)" in err[0] and "--output" in err[0]


def test_reproduce_pushes_once(run, server, capsys):
    out = run[0]
    # an unreachable Hub: one line, and the next invocation retries only what is left
    n = len(events(out))
    capsys.readouterr()
    assert reproduce(out, "--push", "org/repro", "--endpoint", "http://127.0.0.1:9") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "org/repro failed" in err[0] and "retries only the push" in err[0]
    assert statuses(events(out)[n:])["card"] == "ran"  # the card now names org/repro
    n = len(events(out))
    assert reproduce(out, "--push", "org/repro", "--endpoint", server.url) == 0
    first = statuses(events(out)[n:])
    assert first["push"] == "ran" and first["card"] == "skipped" and first["pretrain"] == "skipped"
    head = server.head("org/repro")
    card = server.file_bytes("org/repro", "README.md").decode()
    assert "hf-hub:org/repro" in card and "linear_top1_20pct_labels" in card and "## Reproduction" in card
    config = json.loads(server.file_bytes("org/repro", "config.json"))
    assert config["ssl_zoo"]["metrics"]["retrieval_mAP"]["split"] == "test"
    assert server.file_bytes("org/repro", "model.safetensors") == (out / "model.safetensors").read_bytes()
    n = len(events(out))
    assert reproduce(out, "--push", "org/repro", "--endpoint", server.url) == 0
    assert statuses(events(out)[n:])["push"] == "skipped" and server.head("org/repro") == head
    assert TOKEN not in capsys.readouterr().out


def test_push_results_refuses_random_init_and_skips_it_in_the_run_folder(run, server, tmp_path, capsys):
    out = run[0]
    real = json.loads((out / "eval" / "knn.json").read_text())
    random_init = {**real, "model": {**real["model"], "source": "random-init", "name": RECIPE}}
    random_init.pop("reproduce")
    random_init["model"].pop("weights_sha256")
    bad = tmp_path / "random.json"
    bad.write_text(json.dumps(random_init))
    capsys.readouterr()
    assert cli_main(["push", str(out), "--repo", "org/refused", "--endpoint", server.url, "--results", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "randomly initialised" in err[0] and str(bad) in err[0]
    with pytest.raises(Exception):  # noqa: B017  (the repo was never created: any look-up error)
        server.head("org/refused")
    # a result of other weights is refused too
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**real, "model": {**real["model"], "weights_sha256": "0" * 64}}))
    with pytest.raises(H.EvalResultError, match="other weights"):
        H.push_to_hub(out, "org/refused", endpoint=server.url, results=[other])

    # in a copy of the run folder, the same random-init file among eval/*.json is skipped with a note
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    (copy / "eval" / "random.json").write_text(json.dumps(random_init))
    extra = tmp_path / "knn_extra.json"  # an explicit `ssl-zoo eval` result of these weights
    extra.write_text(json.dumps({**real, "model_index": {"knn_top1_k5": {**real["model_index"]["knn_top1_k20"],
                                                                         "value": 77.123456}}}))
    assert cli_main(["push", str(copy), "--repo", "org/with-results", "--endpoint", server.url,
                     "--results", str(extra)]) == 0
    assert "skipped" in capsys.readouterr().err
    meta = yaml.safe_load(server.file_bytes("org/with-results", "README.md").decode().split("---")[1])
    values = {m["name"]: m["value"] for e in meta["model-index"][0]["results"] for m in e["metrics"]}
    assert values["knn_top1_k5"] == 77.12 and values["knn_top1_k20"] == round(real["metrics"]["top1_k20"], 2)
    assert len(values) == 12  # 2 x 3 linear + 3 retrieval + 2 k-NN + the extra; the random-init file adds none


def test_card_never_lists_a_random_init_measurement():
    config = {"architecture": "test_resnet", "num_features": 8,
              "ssl_zoo": {"method": "moco_v2", "dataset": "digits",
                          "metrics": {"knn20_before": 41.5, "knn20": 80.123456, "final_loss": 3.2}}}
    card = str(H.build_model_card(config, "org/demo"))
    meta = yaml.safe_load(card.split("---")[1])
    metrics = {m["name"]: m["value"] for e in meta["model-index"][0]["results"] for m in e["metrics"]}
    assert metrics == {"knn20": 80.12}
    assert "knn20_before" not in card


def test_recipes_declare_protocols_and_sourced_paper_numbers():
    cub = get_recipe("moco_v2_synth_r50_cub")
    assert [p.key for p in cub.evaluation] == PROTOCOLS
    paper = {(r.protocol, r.metric): (r.value, r.source) for r in cub.paper_results}
    assert paper["linear_20", "top1"] == (49.69, "synth paper Tab. 1")
    assert paper["retrieval", "mAP"] == (19.70, "synth paper Tab. 1")
    assert dict(((r.protocol, r.metric), r.value) for r in get_recipe("simsiam_synth_r50_cub").paper_results) == {
        ("linear_100", "top1"): 57.80, ("retrieval", "rank1"): 24.67}
    assert get_recipe("leoclr_r18_stl10").paper_results[0].value == 85.20
    assert [p.key for p in get_recipe(RECIPE).evaluation] == PROTOCOLS
    assert Recipe.from_dict(cub.to_dict()) == cub
    with pytest.raises(ValueError, match="names no declared evaluation protocol"):
        Recipe(name="x", method="moco_v2", evaluation=(EvalProtocol("knn"),),
               paper_results=(PaperResult("linear_100", "top1", 1.0, "Tab. 9"),))
    with pytest.raises(ValueError, match="label_fraction applies to the linear probe only"):
        EvalProtocol("knn", label_fraction=0.5)
    # a recipe without protocols says so in one line
    assert cli_main(["reproduce", "moco_v2_r18_digits", "--output", "/nonexistent/never"]) == 2


def test_comparison_puts_the_papers_numbers_beside_ours():
    from ssl_zoo.reproduce import comparison_rows, markdown_table

    cub = get_recipe("moco_v2_synth_r50_cub")
    rows = comparison_rows(cub, {"linear_100": {"top1": 61.234, "top5": 85.0, "train_loss": 1.5}})
    by = {(r["protocol"], r["metric"]): r for r in rows}
    assert by["linear_100", "top1"] == {"protocol": "linear_100", "metric": "top1", "ours": 61.23, "paper": 66.17,
                                        "paper_source": "synth paper Tab. 1"}
    assert by["linear_100", "top5"]["paper"] is None and ("linear_100", "train_loss") not in by
    assert by["linear_50", "top1"]["ours"] is None and by["linear_50", "top1"]["paper"] == 60.84  # not measured yet
    assert [k for k in by if k[0] == "retrieval"] == [("retrieval", "rank1"), ("retrieval", "rank5"),
                                                       ("retrieval", "mAP")]
    table = markdown_table(rows)
    assert "| linear_100 | top1 | 61.23 | 66.17 | synth paper Tab. 1 |" in table
    assert "| linear_50 | top1 | — | 60.84 | synth paper Tab. 1 |" in table


def test_publish_script_refuses_a_random_init_result(run, tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))
    import publish

    real = json.loads((run[0] / "eval" / "retrieval.json").read_text())
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(real))
    bad.write_text(json.dumps({**real, "model": {**real["model"], "source": "random-init"}}))
    model_dir = run[0]
    assert publish.load_metrics([str(good)], model_dir)["retrieval_mAP"]["value"] == round(real["metrics"]["mAP"], 2)
    with pytest.raises(SystemExit, match="randomly initialised"):
        publish.load_metrics([str(good), str(bad)], model_dir)
    other = tmp_path / "other.json"  # a result of other weights is refused too
    other.write_text(json.dumps({**real, "model": {**real["model"], "weights_sha256": "0" * 64}}))
    with pytest.raises(SystemExit, match="other weights"):
        publish.load_metrics([str(other)], model_dir)


# -- --push is checked before any work (issue 21) -------------------------------------------------------------

def test_push_id_is_checked_first():
    from ssl_zoo.reproduce import ReproduceError, check_push_target

    for bad in ("bad id", "no-slash", "org/name@main"):
        with pytest.raises(ReproduceError, match="--push"):
            check_push_target(bad, None, print)


def test_push_login_is_checked_online_and_skipped_offline(server, monkeypatch):
    import huggingface_hub

    from ssl_zoo.reproduce import ReproduceError, check_push_target

    notes: list[str] = []
    check_push_target("org/repro", server.url, notes.append)  # a token the Hub accepts: nothing to say
    assert notes == []
    check_push_target("org/repro", "http://127.0.0.1:9", notes.append)  # the Hub unreachable: said, not refused
    assert len(notes) == 1 and "unreachable" in notes[0] and TOKEN not in notes[0]
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ReproduceError, match="no Hub token"):
        check_push_target("org/repro", server.url, notes.append)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    check_push_target("org/repro", server.url, notes.append)  # offline: the login is not checked, and it says so
    assert "HF_HUB_OFFLINE" in notes[-1]


def test_reproduce_with_a_bad_push_id_does_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert reproduce(out, "--push", "bad id") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'bad id' is not a Hub repo id" in err[0]
    assert not out.exists()
