"""benchmarks/eval_speed.py and benchmarks/cli_speed.py on tiny sizes: they run, and their files say what was run."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _run(script: str, args: list[str], monkeypatch) -> int:
    monkeypatch.setattr(sys, "argv", [f"benchmarks/{script}", *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "benchmarks" / script), run_name="__main__")
    return exit_info.value.code


def test_eval_speed_writes_ratios_machine_and_command(tmp_path, monkeypatch, capsys):
    out, md = tmp_path / "eval_speed.json", tmp_path / "eval_speed.md"
    args = ["--bank", "300", "--queries", "40", "--k", "5", "400", "--retrieval-n", "90", "--dim", "16",
            "--chunk-size", "16", "--repeats", "1", "--sort-baseline", "--device", "cpu", "--threads", "1",
            "--embed-arch", "test_resnet", "--embed-images", "10", "--embed-size", "16", "--embed-batch", "4",
            "--json", str(out), "--markdown", str(md)]
    threads = torch.get_num_threads()
    try:
        assert _run("eval_speed.py", args, monkeypatch) == 0
    finally:
        torch.set_num_threads(threads)  # --threads 1 set it for this whole process
    info = json.loads(out.read_text())
    cases = [r["case"] for r in info["results"]]
    assert cases == ["knn matmul", "knn k=5", "knn k=400", "knn matmul + full sort", "retrieval matmul",
                     "retrieval rank-1/5 + mAP", "retrieval matmul + full sort", "embed timm loop",
                     "embed extract_features", "embed extract_features (Accelerator)"]
    for row in info["results"]:
        reference = next(r for r in info["results"] if r["case"] == row["reference"])
        assert reference["group"] == row["group"] and reference["case"].endswith(("matmul", "timm loop"))
        assert row["ratio_to_matmul"] == pytest.approx(row["median_s"] / reference["median_s"], rel=0.01)
        assert row["cpu_ratio_to_matmul"] == pytest.approx(row["cpu_median_s"] / reference["cpu_median_s"], rel=0.01)
    assert info["device"] == "cpu" and info["threads"] == 1
    assert info["command"].startswith("python benchmarks/eval_speed.py --bank 300")
    text = md.read_text()
    assert "| knn k=400 |" in text and "Machine:" in text and info["command"] in text
    assert _run("eval_speed.py", ["--only", "retrieval", "--retrieval-n", "50", "--dim", "8", "--repeats", "1",
                                  "--device", "cpu", "--json", str(out)], monkeypatch) == 0
    assert [r["case"] for r in json.loads(out.read_text())["results"]] == ["retrieval matmul",
                                                                           "retrieval rank-1/5 + mAP"]
    assert _run("eval_speed.py", ["--k", "0"], monkeypatch) == 2
    assert "must be >= 1" in capsys.readouterr().err


def test_cli_speed_times_help_list_and_every_subcommands_help(tmp_path, monkeypatch):
    from ssl_zoo.cli import COMMANDS
    from ssl_zoo.parsers.eval import PROTOCOLS

    out, md = tmp_path / "cli_speed.json", tmp_path / "cli_speed.md"
    assert _run("cli_speed.py", ["--repeats", "1", "--no-floors", "--limit", "30", "--json", str(out), "--markdown",
                                 str(md)], monkeypatch) == 0
    info = json.loads(out.read_text())
    prog = "python -m ssl_zoo.cli"
    assert [r["command"] for r in info["results"]] == [f"{prog} --help", f"{prog} list",
                                                       *[f"{prog} {name} --help" for name in COMMANDS],
                                                       *[f"{prog} eval {p} --help" for p in PROTOCOLS]]
    assert all(r["median_s"] > 0 and r["under_limit"] for r in info["results"]) and info["limit_s"] == 30
    assert "| `python -m ssl_zoo.cli eval knn --help` |" in md.read_text() and "Machine:" in md.read_text()


def test_augment_sweep_trains_and_evaluates_each_preset(tmp_path):
    """benchmarks/augment_sweep.py at toy scale: one row per (recipe, preset), each trained with its preset."""
    import json

    from conftest import load_benchmark

    sweep = load_benchmark("augment_sweep")
    md = tmp_path / "sweep.md"
    assert sweep.main(["moco_v2_r18_digits", "--presets", "full", "crop_only", "--epochs", "1", "--batch-size", "256",
                       "--set", "arch=test_resnet", "--set", "model_args={}", "--set", "queue_size=256",
                       "--runs", str(tmp_path / "runs"), "--markdown", str(md)]) == 0
    rows = json.loads(md.with_suffix(".json").read_text())["rows"]
    trained = [r["recipe"] for r in rows if r["encoder"] == "trained"]  # compare.py: + each one's untrained row
    assert trained == ["moco_v2_r18_digits__full", "moco_v2_r18_digits__crop_only"]
    config = json.loads((tmp_path / "runs" / "moco_v2_r18_digits__crop_only" / "config.json").read_text())
    assert config["ssl_zoo"]["recipe_config"]["augment"]["augment_preset"] == "crop_only"
