"""`ssl-zoo demo` end to end at toy scale: before/after table, weights written, k-NN numbers recorded."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed
from safetensors.torch import load_file

import ssl_zoo
from ssl_zoo.demo import format_table, knn_table, run_demo
from ssl_zoo.evaluation.baseline import recompute_batchnorm_stats, training_images, untrained_encoder


def test_format_table_shows_both_rows_and_the_gain() -> None:
    before = {"knn20": 80.0, "knn200": 70.0, "knn20_init_bn": 60.0, "knn200_init_bn": 50.0}
    table = format_table(before, {"knn20": 91.5, "knn200": 88.25})
    assert "untrained, same start (BN stats recomputed)" in table and "MoCo v2 trained" in table
    assert "untrained, initial BN stats" in table and "| 60.0%" in table
    assert "+11.5" in table and "+18.2" in table  # the gain is over the BN-recomputed row: 88.25 - 70.0


def test_demo_runs_and_records_before_and_after(tmp_path: Path, capsys) -> None:
    # Tiny encoder and 2 optimiser steps: checks the wiring (same initial weights, both evaluations,
    # export), not the accuracy gain, which docs/training.md reports for the full run.
    overrides = {"arch": "test_resnet", "model_args": {}, "queue_size": 64, "bn_group_size": 8, "warmup_epochs": 0.0}
    out = run_demo(epochs=1, max_steps=2, output=tmp_path, num_workers=0, batch_size=32, progress_bar=False,
                   overrides=overrides)
    before, after = out["before"], out["after"]
    assert set(after) == {"knn20", "knn200"} and set(before) == {"knn20", "knn200", "knn20_init_bn", "knn200_init_bn"}
    assert all(10.0 <= v <= 100.0 for table in (before, after) for v in table.values())
    assert out["train"]["step"] == 2
    # The "before" row is the encoder training started from (seed 0, as train() seeds it) and the
    # exported weights are the trained ones, not the initial ones.
    set_seed(0)
    initial = ssl_zoo.create_method(out["recipe"]).encoder
    assert knn_table(initial, out["recipe"]) == {k: before[f"{k}_init_bn"] for k in ("knn20", "knn200")}
    # ... and its number is that encoder's with BatchNorm statistics recomputed on the training images
    start = recompute_batchnorm_stats(untrained_encoder(out["recipe"], 0), training_images(out["recipe"]), seed=0)
    assert knn_table(start, out["recipe"]) == {k: before[k] for k in ("knn20", "knn200")}
    exported = load_file(tmp_path / "model.safetensors")
    assert any(not torch.equal(exported[k], v) for k, v in initial.state_dict().items())
    config = json.loads((tmp_path / "config.json").read_text())
    metrics = config["ssl_zoo"]["metrics"]
    assert metrics["knn20"] == pytest.approx(after["knn20"])
    assert metrics["knn20_before"] == pytest.approx(before["knn20"])
    assert config["ssl_zoo"]["train"]["global_batch"] == 32
    # the card shows the recomputed-statistics baseline beside each score, and says which statistics it used
    from ssl_zoo.model_card import _metric_items

    items = {m["name"]: m for m in _metric_items(config)}
    assert items["knn20"]["baseline"]["value"] == pytest.approx(before["knn20"])
    assert items["knn20"]["baseline"]["bn_stats"] == "recomputed"


TINY_CLI = ["--set", "arch=test_resnet", "--set", "model_args={}", "--set", "queue_size=64", "--set",
            "bn_group_size=8", "--set", "warmup_epochs=0.0", "--batch-size", "32", "--num-workers", "0"]


def test_a_stopped_demo_exits_3_and_resumes(tmp_path: Path, capsys) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from ssl_zoo.checkpoint import load_checkpoint
    from ssl_zoo.cli import main as cli_main

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
    # far more steps than the test waits for: it is stopped by SIGTERM, not by its length
    cmd = [sys.executable, "-m", "ssl_zoo.cli", "demo", "--output", str(out), "--epochs", "100",
           "--max-steps", "100000", *TINY_CLI]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while not ((out / "log.jsonl").is_file() and (out / "log.jsonl").read_text().strip()):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, stderr[-3000:]
    assert "Traceback" not in stderr and f"ssl-zoo demo --output {out} --resume" in stderr
    # the "before" number was printed before training started, i.e. before any step was logged
    assert ("k-NN of the untrained encoder (seed 0, BatchNorm statistics recomputed on the training images) on the "
            "digits test split: k=20 ") in stdout
    assert "(initial BatchNorm statistics: k=20 " in stdout
    stopped = load_checkpoint(out)["step"]
    assert stopped >= 1 and not (out / "model.safetensors").exists()
    record = json.loads((out / "demo.json").read_text())
    assert record["finished"] is False
    assert set(record["before"]) == {"knn20", "knn200", "knn20_init_bn", "knn200_init_bn"}

    # A plain `demo` on the stopped run neither replaces it nor starts over.
    assert cli_main(["demo", "--output", str(out), *TINY_CLI]) == 2
    assert "--resume" in capsys.readouterr().err
    # --resume with the recorded settings; a new --max-steps ends it soon (as for `train --resume`)
    assert cli_main(["demo", "--output", str(out), "--resume", "--max-steps", str(stopped + 2),
                     "--num-workers", "0"]) == 0
    shown = capsys.readouterr().out
    assert "MoCo v2 trained" in shown and "Resuming from" in shown
    config = json.loads((out / "config.json").read_text())
    assert config["ssl_zoo"]["metrics"]["knn20_before"] == pytest.approx(record["before"]["knn20"])
    assert config["ssl_zoo"]["metrics"]["steps"] == stopped + 2
    assert json.loads((out / "demo.json").read_text())["finished"] is True


def test_demo_refuses_a_folder_that_is_not_a_demo_run(tmp_path: Path, capsys) -> None:
    from ssl_zoo.cli import main as cli_main

    foreign = tmp_path / "my_run"
    foreign.mkdir()
    (foreign / "log.jsonl").write_text('{"step": 10, "loss": 1.0}\n')  # what `ssl-zoo train` leaves
    assert cli_main(["demo", "--output", str(foreign), *TINY_CLI]) == 2
    err = capsys.readouterr().err
    assert "not a demo run" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (foreign / "log.jsonl").read_text() == '{"step": 10, "loss": 1.0}\n'
    assert not (foreign / "demo.json").exists()
    # nothing to resume there either
    assert cli_main(["demo", "--output", str(foreign), "--resume"]) == 2
    assert "not a stopped demo run" in capsys.readouterr().err
    assert cli_main(["demo", "--output", str(tmp_path / "empty"), "--resume"]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_demo_overwrite_replaces_a_foreign_run(tmp_path: Path, capsys) -> None:
    foreign = tmp_path / "my_run"
    foreign.mkdir()
    (foreign / "log.jsonl").write_text('{"step": 10, "loss": 1.0}\n')
    overrides = {"arch": "test_resnet", "model_args": {}, "queue_size": 64, "bn_group_size": 8, "warmup_epochs": 0.0}
    out = run_demo(epochs=1, max_steps=1, output=foreign, num_workers=0, batch_size=32, progress_bar=False,
                   overrides=overrides, overwrite=True)
    assert out["train"]["step"] == 1 and (foreign / "model.safetensors").is_file()
    assert json.loads((foreign / "demo.json").read_text())["finished"] is True
    # a finished demo run belongs to the demo: running it again replaces it without --overwrite
    again = run_demo(epochs=1, max_steps=1, output=foreign, num_workers=0, batch_size=32, progress_bar=False,
                     overrides=overrides)
    assert again["before"] == out["before"] and again["train"]["step"] == 1
