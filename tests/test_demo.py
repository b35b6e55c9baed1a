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


def test_format_table_shows_both_rows_and_the_gain() -> None:
    table = format_table({"knn20": 80.0, "knn200": 70.0}, {"knn20": 91.5, "knn200": 88.25})
    assert "random init" in table and "MoCo v2 trained" in table
    assert "+11.5" in table and "+18.2" in table  # 88.25 - 70.0 = 18.25 -> one decimal


def test_demo_runs_and_records_before_and_after(tmp_path: Path, capsys) -> None:
    # Tiny encoder and 2 optimiser steps: checks the wiring (same initial weights, both evaluations,
    # export), not the accuracy gain, which docs/training.md reports for the full run.
    overrides = {"arch": "test_resnet", "model_args": {}, "queue_size": 64, "bn_group_size": 8, "warmup_epochs": 0.0}
    out = run_demo(epochs=1, max_steps=2, output=tmp_path, num_workers=0, batch_size=32, progress_bar=False,
                   overrides=overrides)
    before, after = out["before"], out["after"]
    for table in (before, after):
        assert set(table) == {"knn20", "knn200"} and all(10.0 <= v <= 100.0 for v in table.values())
    assert out["train"]["step"] == 2
    # The "before" row is the encoder training started from (seed 0, as train() seeds it) and the
    # exported weights are the trained ones, not the initial ones.
    set_seed(0)
    initial = ssl_zoo.create_method(out["recipe"]).encoder
    assert knn_table(initial, out["recipe"]) == before
    exported = load_file(tmp_path / "model.safetensors")
    assert any(not torch.equal(exported[k], v) for k, v in initial.state_dict().items())
    config = json.loads((tmp_path / "config.json").read_text())
    metrics = config["ssl_zoo"]["metrics"]
    assert metrics["knn20"] == pytest.approx(after["knn20"])
    assert metrics["knn20_before"] == pytest.approx(before["knn20"])
    assert config["ssl_zoo"]["train"]["global_batch"] == 32
