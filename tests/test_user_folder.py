"""A user's own flat class-per-folder tree: `train --data` accepts it, so `datasets --check` and `eval` must too."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_digit_folder

import ssl_zoo
from ssl_zoo.cli import main as cli_main


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory) -> Path:
    return make_digit_folder(tmp_path_factory.mktemp("my_images"), per_class=10)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from ssl_zoo.export import save_encoder

    out = tmp_path_factory.mktemp("exported")
    recipe = ssl_zoo.get_recipe("moco_v2_r18_digits").with_overrides(arch="test_resnet", model_args={})
    save_encoder(ssl_zoo.create_model(recipe), out, recipe)
    return out


def test_datasets_check_accepts_a_flat_tree(flat_folder: Path, capsys) -> None:
    assert cli_main(["datasets", "imagefolder", "--data", str(flat_folder), "--check"]) == 0
    out = capsys.readouterr().out
    assert "[train] 40 images" in out and "0 unreadable of 40" in out and "--holdout" in out


@pytest.mark.parametrize("protocol", ["knn", "retrieval"])
def test_eval_holds_out_a_seeded_stratified_split(protocol: str, flat_folder: Path, exported: Path,
                                                  tmp_path: Path) -> None:
    results = []
    for run in range(2):
        out = tmp_path / f"{protocol}{run}.json"
        argv = ["eval", protocol, "--model", str(exported), "--dataset", "imagefolder", "--data", str(flat_folder),
                "--holdout", "0.25", "--num-workers", "0", "--output", str(out)]
        if protocol == "knn":
            argv += ["--k", "3"]
        assert cli_main(argv) == 0
        results.append(json.loads(out.read_text()))
    data = results[0]["dataset"]
    assert data["holdout"] == {"fraction": 0.25, "seed": 0, "from_split": "train", "stratified": True}
    assert data["num_test"] == 10 and data.get("num_train", 30) == 30  # 25% of 40, class-stratified
    assert results[0]["metrics"] == results[1]["metrics"]  # the same held-out images every time


def test_holdout_parts_are_disjoint_stratified_and_seeded() -> None:
    from ssl_zoo.data.base import stratified_split

    targets = [i % 4 for i in range(40)]
    keep, held = stratified_split(targets, 0.25, seed=3)
    assert sorted(keep + held) == list(range(40)) and len(held) == 10
    assert all(2 <= sum(targets[i] == c for i in held) <= 3 for c in range(4))
    assert stratified_split(targets, 0.25, seed=3) == (keep, held)
    assert stratified_split(targets, 0.25, seed=4) != (keep, held)


def test_image_linear_probe_is_repeatable_for_a_seed_and_worker_count(flat_folder: Path, exported: Path,
                                                                      tmp_path: Path) -> None:
    """Same seed, same --num-workers: the same number (each worker draws its own augmentation stream, so
    another worker count is another, equally valid, run; docs/benchmarks.md says so)."""
    metrics = []
    for run in range(2):
        out = tmp_path / f"linear{run}.json"
        assert cli_main(["eval", "linear", "--model", str(exported), "--dataset", "imagefolder", "--data",
                         str(flat_folder), "--holdout", "0.25", "--epochs", "2", "--lr", "1", "--batch-size", "8",
                         "--num-workers", "2", "--seed", "5", "--output", str(out)]) == 0
        metrics.append(json.loads(out.read_text())["metrics"])
    assert metrics[0] == metrics[1]
