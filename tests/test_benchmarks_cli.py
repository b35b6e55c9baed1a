"""Benchmark entry points (`ssl-zoo eval`, benchmarks/*.py): JSON schema, Markdown, model loading, errors."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
from test_evaluation_features import TINY_DATASET, cli_args, export_tiny_encoder, register_tiny_dataset

from ssl_zoo.evaluation import extract_features, knn_accuracy, retrieval_metrics
from ssl_zoo.evaluation.cli import load_encoder, main
from ssl_zoo.transforms import eval_transform

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/conftest.py


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    register_tiny_dataset()
    return export_tiny_encoder(tmp_path_factory.mktemp("model"))


def _tiny_features(model_dir: str, split: str):
    from ssl_zoo.data import create_dataset

    encoder, _ = load_encoder(model_dir)
    dataset = create_dataset(TINY_DATASET, split=split, transform=eval_transform(encoder))
    return extract_features(encoder, dataset, batch_size=16)


def test_local_model_dir_loads_the_exported_weights(model_dir):
    import timm

    encoder, info = load_encoder(model_dir)
    torch.manual_seed(0)
    reference = timm.create_model("test_resnet", num_classes=0)
    assert info["source"] == "local"
    assert all(torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), reference.state_dict().values()))


def test_knn_json_markdown_and_metrics_match_the_library(model_dir, tmp_path):
    out, md = tmp_path / "knn.json", tmp_path / "results.md"
    assert main(cli_args(model_dir, out, "--k", "5", "--markdown", str(md)), protocol="knn") == 0
    result = json.loads(out.read_text())
    for key in ("protocol", "metrics", "model", "dataset", "settings", "ssl_zoo_version", "wall_time_s",
                "world_size", "model_index", "command"):
        assert key in result, key
    assert result["protocol"] == "knn" and result["settings"]["image_size"] == 16
    from ssl_zoo.data.fingerprint import splits_fingerprint

    assert result["dataset"] == {"name": TINY_DATASET, "root": None, "train_split": "train", "num_train": 41,
                                 "test_split": "test", "num_test": 23, "num_classes": 10,
                                 "fingerprint": splits_fingerprint(TINY_DATASET, None, ["train", "test"])}
    train_f, train_l = _tiny_features(model_dir, "train")
    test_f, test_l = _tiny_features(model_dir, "test")
    expected = 100 * knn_accuracy(train_f, train_l, test_f, test_l, k=5, num_classes=10)
    assert result["metrics"]["top1_k5"] == pytest.approx(expected, abs=1e-3)
    assert result["model_index"]["knn_top1_k5"]["dataset"] == TINY_DATASET
    lines = md.read_text().splitlines()
    assert lines[0].startswith("| model |") and len(lines) == 3
    assert f"top-1 k=5 {expected:.2f}" in lines[2]


def test_retrieval_json(model_dir, tmp_path):
    out = tmp_path / "retrieval.json"
    assert main(["retrieval", *cli_args(model_dir, out)]) == 0  # the `ssl-zoo eval` form
    result = json.loads(out.read_text())
    features, labels = _tiny_features(model_dir, "test")
    expected = retrieval_metrics(features, labels)
    assert result["metrics"] == pytest.approx({k: 100 * v for k, v in expected.items()}, abs=1e-3)
    assert result["model_index"]["retrieval_mAP"]["task"] == "image-retrieval"


def test_linear_cached_features_with_label_fraction_states_the_difference(model_dir, tmp_path):
    out = tmp_path / "linear.json"
    args = cli_args(model_dir, out, "--cached-features", "--epochs", "3", "--milestones", "2",
                    "--label-fraction", "0.5")
    assert main(args, protocol="linear") == 0
    result = json.loads(out.read_text())
    assert result["settings"]["cached_features"] is True
    assert "no train-time augmentation" in result["settings"]["protocol_note"]
    assert result["dataset"]["num_train"] < 41 and result["settings"]["label_fraction"] == 0.5
    assert 0 <= result["metrics"]["top1"] <= result["metrics"]["top5"] <= 100


def test_linear_on_images(model_dir, tmp_path):
    out = tmp_path / "linear.json"
    assert main(cli_args(model_dir, out, "--epochs", "1", "--milestones"), protocol="linear") == 0
    result = json.loads(out.read_text())
    assert result["settings"]["train_transform"].startswith("RandomResizedCrop")
    assert result["settings"]["lr"] == 30.0 and result["settings"]["reported_epoch"] == "last"


def test_bad_inputs_give_clear_errors(model_dir, tmp_path, capsys):
    assert main(["--model", "moco_v2_r18_digitz"], protocol="knn") == 2
    assert "Did you mean moco_v2_r18_digits" in capsys.readouterr().err
    assert main(cli_args(model_dir, tmp_path / "x.json", "--label-fraction", "1.5"), protocol="linear") == 2
    assert "--label-fraction must be in (0, 1]" in capsys.readouterr().err
    assert main(cli_args(model_dir, tmp_path / "x.json", "--dataset", "no_such_set"), protocol="knn") == 2
    assert "Unknown dataset" in capsys.readouterr().err


# each script's help lists its protocol's options, not the other protocols'
@pytest.mark.parametrize("script, options, absent", [
    ("linear", ("--cached-features", "--milestones"), ("--temperature", "--grid-lr")),
    ("retrieval", ("--chunk-size", "--holdout"), ("--epochs", "--temperature")),
    ("knn", ("--temperature", "--k"), ("--cached-features", "--crop-scales")),
    ("finetune", ("--split-file", "--save-model"), ("--grid-lr", "--k")),
    ("transfer", ("--grid-lr", "--val-fraction"), ("--split-file", "--lr")),
    ("crop_robustness", ("--crop-scales", "--head"), ("--grid-lr", "--temperature"))])
def test_benchmark_scripts_run_as_main(script, options, absent, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [f"benchmarks/{script}.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "benchmarks" / f"{script}.py"), run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"benchmarks/{script}.py" in out  # the usage line names the file that exists
    assert all(option in out for option in options)
    assert not any(f"{option} " in out for option in absent), out
