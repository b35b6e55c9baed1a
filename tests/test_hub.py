"""Publishing and loading weights against a real HTTP server speaking the Hub protocol
(tests/hub_server.py) with the real huggingface_hub client and timm's hf-hub: loader."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import HfApi, ModelCard, constants

import ssl_zoo
from ssl_zoo import hub as H
from ssl_zoo.cli import main as cli_main
from ssl_zoo.export import read_encoder_config, save_encoder

sys.path.insert(0, str(Path(__file__).parent))

from conftest import HUB_TOKEN as TOKEN  # noqa: E402

# The digits demo recipe on timm's tiny test_resnet with a small queue: trains in a few steps.
RECIPE = ssl_zoo.get_recipe("moco_v2_r18_digits").with_overrides(arch="test_resnet", model_args={}, queue_size=64)


@pytest.fixture(scope="module")
def server(local_hub):
    """The test Hub (conftest.local_hub), with huggingface_hub and timm pointed at it for this module."""
    return local_hub


@pytest.fixture
def hub(server, tmp_path, monkeypatch):
    """A fresh, online cache per test (HF_HUB_CACHE and torch's URL cache)."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return server


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real (tiny) training run: checkpoint.pt, log.jsonl, model.safetensors, config.json."""
    from ssl_zoo.train import train

    out = tmp_path_factory.mktemp("run")
    train(RECIPE, output=out, batch_size=16, max_steps=2, num_workers=0, progress_bar=False)
    return out


@pytest.fixture(scope="module")
def pushed(server, run_dir):
    """The demo run published once as org/demo (module-wide: later tests read it)."""
    info = H.push_to_hub(run_dir, "org/demo", token=TOKEN, endpoint=server.url)
    return info


def features(model, seed=1):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def local_encoder(run_dir):
    return ssl_zoo.create_model(RECIPE, checkpoint=run_dir)


def test_push_then_load_in_fresh_cache_is_byte_identical(hub, run_dir, pushed, tmp_path):
    weights = (run_dir / "model.safetensors").read_bytes()
    assert hub.file_bytes("org/demo", "model.safetensors") == weights
    model = ssl_zoo.create_model("hf-hub:org/demo", pretrained=True)
    cached = list((tmp_path / "hf_cache").rglob("snapshots/*/model.safetensors"))
    assert len(cached) == 1 and cached[0].read_bytes() == weights
    assert torch.equal(features(model), features(local_encoder(run_dir)))
    assert model.pretrained_cfg["hf_hub_id"] == "org/demo"
    # config.json travels unchanged; the card is generated
    assert json.loads(hub.file_bytes("org/demo", "config.json")) == read_encoder_config(run_dir)
    assert not any(p.startswith("training_state/") for p in hub.state.repos["org/demo"].commits[pushed.oid].files)


def test_model_card_metadata(hub, pushed, tmp_path):
    card = ModelCard(hub.file_bytes("org/demo", "README.md").decode())
    data = card.data.to_dict()
    assert data["library_name"] == "timm" and data["pipeline_tag"] == "image-feature-extraction"
    assert data["license"] == "apache-2.0" and data["datasets"] == ["digits"]
    assert {"self-supervised", "ssl_zoo", "moco_v2"} <= set(data["tags"])
    assert "model-index" not in data  # the run has training statistics only, no evaluation
    assert 'ssl_zoo.create_model("hf-hub:org/demo", pretrained=True)' in card.text
    assert 'timm.create_model("hf-hub:org/demo", pretrained=True)' in card.text
    assert "Improved Baselines with Momentum Contrastive Learning" in card.text
    assert "final_loss" in card.text

    # With measured evaluation metrics the card gets a model-index.
    enc = ssl_zoo.create_backbone(RECIPE)
    folder = save_encoder(enc, tmp_path / "m", RECIPE, metrics={"knn_top1": 0.875, "final_loss": 3.2,
                                                                 "linear_top1": {"value": 0.9, "split": "test"}})
    card = H.build_model_card(read_encoder_config(folder), "org/x")
    results = {r.metric_type: r for r in card.data.eval_results}
    assert set(results) == {"knn_top1", "linear_top1"}
    assert results["knn_top1"].metric_value == 0.875 and results["linear_top1"].dataset_split == "test"
    assert results["knn_top1"].dataset_name == "digits"


def test_timm_loads_our_repo_and_file(hub, run_dir, pushed):
    ours = features(local_encoder(run_dir))
    model = timm.create_model("hf-hub:org/demo", pretrained=True)
    assert model.num_classes == 0 and torch.equal(features(model), ours)
    file_model = timm.create_model("test_resnet", pretrained=True, num_classes=0,
                                   pretrained_cfg_overlay=dict(file=str(run_dir / "model.safetensors")))
    assert torch.equal(features(file_model), ours)
    # timm swaps in a fresh head and keeps the backbone
    clf = timm.create_model("hf-hub:org/demo", pretrained=True, num_classes=10)
    assert torch.equal(clf.conv1[0].weight if isinstance(clf.conv1, torch.nn.Sequential) else clf.conv1.weight,
                       model.conv1[0].weight if isinstance(model.conv1, torch.nn.Sequential) else model.conv1.weight)


def test_new_head_is_fresh_backbone_is_loaded(hub, run_dir, pushed):
    clf = ssl_zoo.create_model("hf-hub:org/demo", pretrained=True, num_classes=7)
    enc = local_encoder(run_dir)
    assert clf.get_classifier().out_features == 7
    clf.reset_classifier(0)
    assert torch.equal(features(clf), features(enc))


def test_repush_makes_new_commit_and_revisions_pin(hub, run_dir, pushed, tmp_path):
    before = hub.commits("org/demo")
    same = H.push_to_hub(run_dir, "org/demo", token=TOKEN)  # nothing changed: the Hub skips the commit
    assert same.oid == hub.head("org/demo") == before[0]
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "model.safetensors").write_bytes((run_dir / "model.safetensors").read_bytes())
    cfg = read_encoder_config(run_dir)
    cfg["ssl_zoo"]["metrics"] = {"knn_top1": 0.5}
    (changed / "config.json").write_text(json.dumps(cfg))
    info = H.push_to_hub(changed, "org/demo", token=TOKEN, commit_message="add k-NN accuracy")
    after = hub.commits("org/demo")
    assert after[0] == info.oid and after[1:] == before
    assert "model-index" in hub.file_bytes("org/demo", "README.md").decode()
    old = H.create_model_from_hub(f"org/demo@{before[0]}", pretrained=False)
    assert old.pretrained_cfg["hf_hub_id"] == f"org/demo@{before[0]}"
    # a branch push leaves main alone
    H.push_to_hub(run_dir, "org/demo", token=TOKEN, revision="v1")
    assert hub.head("org/demo") == info.oid and hub.head("org/demo", "v1") != info.oid
    assert torch.equal(features(ssl_zoo.create_model("hf-hub:org/demo@v1", pretrained=True)),
                       features(local_encoder(run_dir)))


def test_offline_serves_from_cache_without_http(hub, run_dir, pushed, monkeypatch, tmp_path):
    online = features(ssl_zoo.create_model("hf-hub:org/demo", pretrained=True))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    n_requests = len(hub.state.requests)
    assert torch.equal(features(ssl_zoo.create_model("hf-hub:org/demo", pretrained=True)), online)
    assert len(hub.state.requests) == n_requests  # no HTTP at all
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(H.WeightsOfflineError, match="HF_HUB_OFFLINE is set.*not in the cache"):
        ssl_zoo.create_model("hf-hub:org/demo", pretrained=True)


def test_missing_repo_revision_and_file(hub, pushed):
    with pytest.raises(H.WeightsNotFoundError, match="Hub repo 'org/nope' not found"):
        ssl_zoo.create_model("hf-hub:org/nope", pretrained=True)
    with pytest.raises(H.WeightsNotFoundError, match="Revision 'v999' does not exist"):
        ssl_zoo.create_model("hf-hub:org/demo@v999", pretrained=True)
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo("org/config-only", exist_ok=True)
    api.upload_file(path_or_fileobj=hub.file_bytes("org/demo", "config.json"), path_in_repo="config.json",
                    repo_id="org/config-only")
    with pytest.raises(H.WeightsNotFoundError, match="has no file 'model.safetensors'"):
        ssl_zoo.create_model("hf-hub:org/config-only", pretrained=True)
    with pytest.raises(ValueError, match="Invalid Hub repo"):
        ssl_zoo.create_model("hf-hub:not a repo", pretrained=True)


def test_recipe_weight_priority_and_checksum(hub, run_dir, pushed, tmp_path):
    expected = features(local_encoder(run_dir))
    sha = H.sha256_file(run_dir / "model.safetensors")
    on_hub = RECIPE.with_overrides(weights={"hf_hub_id": "org/demo", "revision": pushed.oid, "sha256": sha})
    assert torch.equal(features(ssl_zoo.create_model(on_hub, pretrained=True)), expected)
    with pytest.raises(H.ChecksumMismatchError, match=f"sha256 is {sha}, the recipe records 0+"):
        ssl_zoo.create_model(on_hub.with_overrides(sha256="0" * 64), pretrained=True)
    # file beats Hub: another encoder in a local folder wins over the repo
    other = save_encoder(ssl_zoo.create_backbone(RECIPE.with_overrides(arch="test_resnet")), tmp_path / "other",
                         RECIPE)
    both = on_hub.with_overrides(file=str(other), sha256=None)
    assert torch.equal(features(ssl_zoo.create_model(both, pretrained=True)),
                       features(ssl_zoo.create_model(RECIPE, checkpoint=other)))
    assert not torch.equal(features(ssl_zoo.create_model(both, pretrained=True)), expected)
    # a URL (served by the test server) when there is neither file nor Hub repo; cached in TORCH_HOME
    url = f"{hub.url}/org/demo/resolve/{pushed.oid}/model.safetensors"
    by_url = RECIPE.with_overrides(url=url, sha256=sha)
    assert torch.equal(features(ssl_zoo.create_model(by_url, pretrained=True)), expected)
    assert list((tmp_path / "torch_home").rglob("model.safetensors"))
    with pytest.raises(H.WeightsNotPublishedError, match="ssl-zoo train moco_v2_r18_digits.*ssl-zoo convert"):
        ssl_zoo.create_model(RECIPE, pretrained=True)


def test_checkpoint_argument_accepts_run_dir_file_and_training_state(run_dir):
    expected = features(local_encoder(run_dir))
    assert torch.equal(features(ssl_zoo.create_model(RECIPE, checkpoint=run_dir / "model.safetensors")), expected)
    # the trainer's full state (method keys under "encoder.") loads the encoder too
    assert torch.equal(features(ssl_zoo.create_model(RECIPE, checkpoint=run_dir / "checkpoint.pt")), expected)
    with pytest.raises(H.WeightsNotFoundError, match="does not exist"):
        ssl_zoo.create_model(RECIPE, checkpoint=run_dir / "nope.safetensors")


def test_truncated_and_foreign_weights(run_dir, tmp_path):
    data = (run_dir / "model.safetensors").read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(H.CorruptWeightsError, match="truncated"):
        ssl_zoo.create_model(RECIPE, checkpoint=bad)
    r18 = save_encoder(timm.create_model("resnet18", num_classes=0, layers=[1, 1, 1, 1]), tmp_path / "r18",
                       architecture="resnet18")
    with pytest.raises(H.ArchitectureMismatchError, match=r"do not fit test_resnet: \d+ missing keys .*unexpected.*"
                                                          r"shape mismatches \(conv1\.weight|shape mismatches"):
        ssl_zoo.create_model(RECIPE, checkpoint=r18)


def test_cli_push_private_with_training_state_never_shows_token(hub, run_dir, capsys, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    assert cli_main(["push", str(run_dir), "--repo", "org/cli", "--private", "--endpoint", hub.url,
                     "--include-training-state", "--message", "first"]) == 0
    out = capsys.readouterr()
    assert "org/cli" in out.out and H.sha256_file(run_dir / "model.safetensors") in out.out
    assert hub.file_bytes("org/cli", "training_state/checkpoint.pt") == (run_dir / "checkpoint.pt").read_bytes()
    assert all(had_token for method, path, had_token in hub.state.requests if path.startswith("/api/models/org/cli"))
    # an error path goes through the same scrubbing
    assert cli_main(["push", str(run_dir / "missing"), "--repo", "org/cli", "--endpoint", hub.url]) == 2
    err = capsys.readouterr()
    text = out.out + out.err + err.out + err.err + caplog.text
    assert TOKEN not in text
    # private: anonymous reads are refused as "not found", the token's owner can read
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)
    with pytest.raises(H.WeightsNotFoundError, match="private"):
        ssl_zoo.create_model("hf-hub:org/cli", pretrained=True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)
    assert ssl_zoo.create_model("hf-hub:org/cli", pretrained=True).num_features == read_encoder_config(
        run_dir)["num_features"]


def test_push_module_and_errors(hub, tmp_path):
    enc = ssl_zoo.create_backbone(RECIPE)
    info = H.push_to_hub(enc, "org/from-module", token=TOKEN, recipe=RECIPE)
    cfg = json.loads(hub.file_bytes("org/from-module", "config.json"))
    assert cfg["ssl_zoo"]["recipe"] == RECIPE.name and info.oid == hub.head("org/from-module")
    assert torch.equal(features(ssl_zoo.create_model("hf-hub:org/from-module", pretrained=True)), features(enc))
    with pytest.raises(H.WeightsError, match="classifier head"):
        H.push_to_hub(timm.create_model("test_resnet", num_classes=3), "org/x", token=TOKEN)
    # without recipe=, a module from an overridden recipe is published with its architecture only
    H.push_to_hub(enc, "org/bare", token=TOKEN)
    assert json.loads(hub.file_bytes("org/bare", "config.json"))["architecture"] == "test_resnet"
    with pytest.raises(ValueError, match="revision=..."):
        H.push_to_hub(enc, "org/x@v2", token=TOKEN)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(H.WeightsNotFoundError, match="No model.safetensors"):
        H.push_to_hub(empty, "org/x", token=TOKEN)


def test_publish_script_records_the_commit(hub, run_dir, tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))
    import publish

    zoo = tmp_path / "zoo.json"
    zoo.write_text((Path(__file__).parents[1] / "hub" / "zoo.json").read_text())
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"knn_top1": 0.25}))
    # a benchmark result file (benchmarks/retrieval.py --output) feeds the card through its model_index block
    bench = tmp_path / "retrieval.json"
    # (it records the digest of the weights it measured: a result of other weights would be refused)
    bench.write_text(json.dumps({"protocol": "retrieval", "metrics": {"mAP": 12.5}, "model_index": {
        "retrieval_mAP": {"value": 12.5, "dataset": "digits", "split": "test", "task": "image-retrieval"}},
        "model": {"weights_sha256": H.sha256_file(run_dir / "model.safetensors")}}))
    assert publish.main([RECIPE.name, "--run-dir", str(run_dir), "--metrics", str(metrics), str(bench),
                         "--zoo", str(zoo), "--write", "--endpoint", hub.url]) == 0
    entry = next(e for e in json.loads(zoo.read_text())["entries"] if e["recipe"] == RECIPE.name)
    repo = entry["repo"]
    assert entry["published"]["revision"] == hub.head(repo)
    assert entry["published"]["sha256"] == H.sha256_file(run_dir / "model.safetensors")
    published_metrics = json.loads(hub.file_bytes(repo, "config.json"))["ssl_zoo"]["metrics"]
    assert published_metrics["knn_top1"] == 0.25 and published_metrics["retrieval_mAP"]["value"] == 12.5
    card = hub.file_bytes(repo, "README.md").decode()
    assert "retrieval_mAP" in card and "image-retrieval" in card
    assert TOKEN not in capsys.readouterr().out
    # the published recipe then loads by name, pinned and verified
    rec = RECIPE.with_overrides(weights={"hf_hub_id": repo, **{k: entry["published"][k] for k in ("revision",
                                                                                                  "sha256")}})
    assert torch.equal(features(ssl_zoo.create_model(rec, pretrained=True)), features(local_encoder(run_dir)))


def test_hf_endpoint_environment_variable_in_a_fresh_process(hub, run_dir, pushed, tmp_path):
    """HF_ENDPOINT, set before huggingface_hub is imported, points timm's hf-hub: loader at a Hub."""
    import os
    import subprocess

    code = ("import sys, timm, torch\n"
            "m = timm.create_model('hf-hub:org/demo', pretrained=True).eval()\n"
            "torch.save(m.state_dict(), sys.argv[1])\n")
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_TOKEN": TOKEN,
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "0"}
    out = tmp_path / "state.pt"
    n_requests = len(hub.state.requests)
    proc = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(hub.state.requests) > n_requests
    expected = local_encoder(run_dir).state_dict()
    state = torch.load(out, weights_only=True)
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in expected)


def test_publish_official_release_then_recipe_prefers_the_hub_and_falls_back_to_the_url(hub, tmp_path,
                                                                                         monkeypatch):
    """hub/publish.py --from-url converts a release in the official MoCo layout (served by a local
    HTTP server) and publishes it; the recipe then loads the Hub copy without touching the URL, and
    the URL when the Hub repo is missing."""
    import hashlib

    sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))
    import publish
    from official_checkpoints import MODEL_ARGS, moco_file, upstream_backbone
    from url_server import FileServer

    from ssl_zoo.recipe import _RECIPES

    up = upstream_backbone(11)
    data = moco_file(up)
    name, repo = "test_moco_release", "org/test_moco_release"
    with FileServer() as srv:
        srv.files["/moco/moco_v2_200ep_pretrain.pth.tar"] = data
        url = srv.url("/moco/moco_v2_200ep_pretrain.pth.tar")
        recipe = ssl_zoo.get_recipe("moco_v2_r18_digits").with_overrides(
            name=name, model_args=MODEL_ARGS,
            weights={"url": url, "md5": hashlib.md5(data).hexdigest()[:8], "source": "moco", "license": "cc-by-nc-4.0"})
        monkeypatch.setitem(_RECIPES, name, recipe)
        zoo = tmp_path / "zoo.json"
        zoo.write_text(json.dumps({"organization": "org", "entries": [{
            "recipe": name, "repo": repo, "produced_by": "convert",
            "upstream": {"source": "moco", "url": url, "md5": recipe.weights.md5, "sha256": None},
            "commands": [f"python hub/publish.py {name} --from-url --write"], "published": None}]}))
        assert publish.main([name, "--from-url", "--zoo", str(zoo), "--write", "--endpoint", hub.url]) == 0
        assert srv.gets() == 1
        entry = json.loads(zoo.read_text())["entries"][0]
        assert entry["upstream"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["published"]["sha256"] == hashlib.sha256(hub.file_bytes(repo, "model.safetensors")).hexdigest()
        card = hub.file_bytes(repo, "README.md").decode()
        assert "license: cc-by-nc-4.0" in card and url in card and "by the authors of the upstream release" in card
        config = json.loads(hub.file_bytes(repo, "config.json"))
        assert config["pretrained_cfg"]["input_size"] == [3, 32, 32] and config["pretrained_cfg"]["pool_size"] == [1, 1]
        timm_model = timm.create_model(f"hf-hub:{repo}", pretrained=True)
        assert torch.equal(features(timm_model), features(up))
        assert timm.data.resolve_data_config({}, model=timm_model)["input_size"] in ([3, 32, 32], (3, 32, 32))

        # The recipe as publish.py says to write it: the Hub copy wins, in a fresh URL cache no URL request.
        published = recipe.with_overrides(weights={"hf_hub_id": repo, "revision": entry["published"]["revision"],
                                                   "sha256": entry["published"]["sha256"]})
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "fresh_torch_home"))
        assert torch.equal(features(ssl_zoo.create_model(published, pretrained=True)), features(up))
        assert srv.gets() == 1
        # Repo not there (not published yet, or gone): the official URL, verified with the md5 prefix.
        missing = published.with_overrides(hf_hub_id="org/not-published", revision=None)
        assert torch.equal(features(ssl_zoo.create_model(missing, pretrained=True)), features(up))
        assert srv.gets() == 2
        # Offline with neither cached: one line naming both.
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_hf_cache"))
        with pytest.raises(H.WeightsOfflineError, match="Neither the Hub nor the URL") as info:
            ssl_zoo.create_model(published, pretrained=True)
        assert "\n" not in str(info.value) and url in str(info.value) and repo in str(info.value)
        assert srv.gets() == 2
