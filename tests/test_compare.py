"""benchmarks/compare.py: the table over seeds (mean and sample std per method) from its rows."""
from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "compare.py"
MACHINE = {"platform": "Linux", "nproc": 2, "torch": "2.14.1", "torch_threads": 2, "python": "3.11"}


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare_benchmark", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(method, seed, knn20, linear=0.5):
    return {"method": method, "recipe": f"{method}_r18", "seed": seed, "epochs": 3, "knn20_top1": knn20,
            "knn200_top1": knn20 / 2, "linear_top1": linear, "train_wall_s": 60.0, "images_per_s": 10.0}


def test_seed_summary_is_mean_and_sample_std_per_method(compare):
    rows = [_row("moco_v2", 1, 0.50), _row("simsiam", 1, 0.40), _row("moco_v2", 2, 0.60), _row("simsiam", 2, 0.42),
            _row("moco_v2", 3, 0.70), _row("simsiam", 3, 0.44)]
    summary = {e["method"]: e for e in compare.seed_summary(rows)}
    assert summary["moco_v2"]["seeds"] == [1, 2, 3]
    assert summary["moco_v2"]["knn20_top1"]["mean"] == pytest.approx(60.0)
    assert summary["moco_v2"]["knn20_top1"]["std"] == pytest.approx(statistics.stdev([50.0, 60.0, 70.0]))  # 10
    assert summary["simsiam"]["knn200_top1"]["mean"] == pytest.approx(21.0)
    text = compare.markdown_table(rows, MACHINE, "python benchmarks/compare.py ...")
    assert "seeds 1, 2, 3" in text and "| moco_v2 | `moco_v2_r18` | 3 | 60.00 ± 10.00 |" in text
    assert text.count("| moco_v2 | `moco_v2_r18` |") == 4  # the summary row and one row per seed


def test_one_seed_has_no_spread_and_no_summary_table(compare):
    rows = [_row("moco_v2", 0, 0.5)]
    assert compare.seed_summary(rows)[0]["knn20_top1"]["std"] is None
    assert "mean" not in compare.markdown_table(rows, MACHINE, "cmd").lower().split("per seed")[0]
