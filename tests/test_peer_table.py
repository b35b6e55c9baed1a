"""benchmarks/peer_table.py: the peer-check table takes every number from the JSON files it names."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_benchmark

peer_table = load_benchmark("peer_table")


def _scores(k20: float, k200: float, linear: float) -> dict[str, float]:
    return {"knn20_top1": k20, "knn200_top1": k200, "linear_top1": linear}


def _write(path: Path, obj: dict) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


@pytest.fixture
def peer(tmp_path: Path) -> str:
    return _write(tmp_path / "peer.json", {
        "command": "python benchmarks/peer_check.py moco_v2_x --seed 2 --json p.json", "recipe": "moco_v2_x",
        "method": "moco_v2", "seed": 2, "peer_library": "lightly", "peer_version": "9.9",
        "machine": {"torch_threads": 1},
        "run": {"steps": 10, "epochs": 2.0, "global_batch": 8, "train_wall_s": 120.0, "same_start_as_ssl_zoo": True},
        "peer": _scores(0.5, 0.25, 0.125)})


def test_rows_come_from_the_recipe_and_seed_of_the_peer(peer: str, tmp_path: Path) -> None:
    rows = [{"recipe": "moco_v2_x", "seed": 1, "encoder": "trained", **_scores(0.9, 0.9, 0.9)},
            {"recipe": "moco_v2_x", "seed": 2, "encoder": "untrained", **_scores(0.11, 0.22, 0.33)},
            {"recipe": "moco_v2_x", "seed": 2, "encoder": "trained", **_scores(0.6, 0.375, 0.0625)},
            {"recipe": "simsiam_x", "seed": 2, "encoder": "trained", **_scores(0.8, 0.8, 0.8)}]
    compare = _write(tmp_path / "cmp.json", {"rows": rows})
    out = tmp_path / "t.md"
    assert peer_table.main(["--entry", peer, compare, "--label", "a view", "--markdown", str(out)]) == 0
    text = out.read_text()
    assert "**moco_v2** (`moco_v2_x`), seed 2: a view." in text
    assert "| ssl_zoo (`ssl_zoo/methods/moco_v2.py`; `cmp.json`) | 60.00 | 37.50 | 6.25 |" in text
    assert "| lightly 9.9 building blocks (`benchmarks/peer_check.py`; `peer.json`) | 50.00 | 25.00 | 12.50 |" in text
    assert "recomputed (`cmp.json`) | 11.00 | 22.00 | 33.00 |" in text
    assert "10 steps (2 epochs of global batch 8) in 2 min" in text


def test_old_comparisons_take_the_start_from_their_untrained_file(peer: str, tmp_path: Path) -> None:
    # before issue 21: trained rows named by method, one "random init" row that is MoCo v2's start for all
    old = _write(tmp_path / "old.json", {"rows": [
        {"method": "random init", "recipe": "moco_v2_x", "seed": 2, **_scores(0.3, 0.3, 0.3)},
        {"method": "moco_v2", "recipe": "moco_v2_x", "seed": 2, **_scores(0.6, 0.6, 0.6)}]})
    out = tmp_path / "t.md"
    with pytest.raises(SystemExit, match="no untrained row for moco_v2_x seed 2"):
        peer_table.main(["--entry", peer, old, "--markdown", str(out)])  # "random init" is never taken as a start
    untrained = _write(tmp_path / "u.json", {"rows": [
        {"recipe": "moco_v2_x", "seed": 2, "encoder": "untrained", **_scores(0.4, 0.4, 0.4)}]})
    assert peer_table.main(["--entry", peer, old, untrained, "--markdown", str(out)]) == 0
    assert "| 60.00 | 60.00 | 60.00 |" in out.read_text() and "(`u.json`) | 40.00 | 40.00 | 40.00 |" in out.read_text()


def test_bad_arguments_are_refused(peer: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        peer_table.main(["--entry", peer, "--markdown", str(tmp_path / "t.md")])  # no comparison file
    with pytest.raises(SystemExit):
        peer_table.main(["--entry", peer, peer, "--label", "a", "--label", "b", "--markdown", str(tmp_path / "t.md")])
