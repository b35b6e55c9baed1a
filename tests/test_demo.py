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
