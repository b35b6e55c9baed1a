"""benchmarks/compare.py: the table over seeds (mean and sample std per method) from its rows, and each
recipe's own untrained baseline (its init, BatchNorm statistics recomputed) with the gains over it."""
from __future__ import annotations

import statistics

import pytest
import torch
from conftest import load_benchmark

MACHINE = {"platform": "Linux", "nproc": 2, "torch": "2.14.1", "torch_threads": 2, "python": "3.11"}


@pytest.fixture(scope="module")
def compare():
    return load_benchmark("compare")


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
    assert "seeds 1, 2, 3" in text and "| moco_v2 | `moco_v2_r18` | trained | 3 | 60.00 ± 10.00 |" in text
    assert text.count("| moco_v2 | `moco_v2_r18` |") == 4  # the summary row and one row per seed


def test_one_seed_has_no_spread_and_no_summary_table(compare):
    rows = [_row("moco_v2", 0, 0.5)]
    assert compare.seed_summary(rows)[0]["knn20_top1"]["std"] is None
    assert "mean" not in compare.markdown_table(rows, MACHINE, "cmd").lower().split("per seed")[0]


def _untrained(method, seed, knn20, init_knn20):
    return {**_row(method, seed, knn20, linear=0.3), "encoder": "untrained", "epochs": 0, "train_wall_s": None,
            "images_per_s": None, "knn20_top1_init_bn": init_knn20, "knn200_top1_init_bn": init_knn20 / 2,
            "linear_top1_init_bn": 0.2}


def test_gains_are_over_the_same_recipes_untrained_row(compare):
    rows = []
    for seed, (moco_start, simsiam_start) in enumerate([(0.40, 0.25), (0.44, 0.27)], start=1):
        for method, start, trained in (("moco_v2", moco_start, 0.50), ("simsiam", simsiam_start, 0.35)):
            untrained = _untrained(method, seed, start, start - 0.05)
            rows += [untrained, compare.add_gains(_row(method, seed, trained), untrained)]
    assert rows[3]["gain_knn20_top1"] == pytest.approx(0.35 - 0.25)  # simsiam seed 1 over simsiam's own start
    summary = {(e["method"], e["encoder"]): e for e in compare.seed_summary(rows)}
    assert len(summary) == 4  # untrained and trained per method
    assert summary[("simsiam", "trained")]["gain_knn20_top1"]["mean"] == pytest.approx(100 * (0.35 - 0.26))
    assert summary[("simsiam", "untrained")]["knn20_top1_init_bn"]["mean"] == pytest.approx(100 * 0.21)
    assert "gain_knn20_top1" not in summary[("simsiam", "untrained")]
    text = compare.markdown_table(rows, MACHINE, "cmd")
    assert compare.LEGEND in text
    assert ("| simsiam | `simsiam_r18` | trained | 2 | 35.00 ± 0.00 | 17.50 ± 0.00 | 50.00 ± 0.00 | "
            "+9.00 ± 1.41 |") in text
    assert "| simsiam | `simsiam_r18` | untrained | 2 | 26.00 ± 1.41 (init BN 21.00 ± 1.41) |" in text
    assert "| simsiam | `simsiam_r18` | untrained | 1 | 0 | 25.00% (init BN 20.00%) |" in text
    assert "| simsiam | `simsiam_r18` | trained | 1 | 3 | 35.00% | 17.50% | 50.00% | +10.00 | +5.00 | +20.00 |" in text


def test_without_untrained_rows_there_are_no_gains(compare):
    row = compare.add_gains(_row("moco_v2", 0, 0.5), None)
    assert not any(k.startswith("gain_") for k in row)
    assert "| - | - | - |" in compare.markdown_table([row], MACHINE, "cmd")
    assert compare.parse_args(["moco_v2_r18_digits", "--markdown", "x.md", "--no-untrained"]).no_untrained


def test_untrained_row_is_each_recipes_own_start_with_both_batchnorm_statistics(compare, monkeypatch):
    """SimSiam's row scores SimSiam's zero_init_last encoder, MoCo v2's its own; both with recomputed and
    initial BatchNorm statistics (the scorer reads them instead of running the k-NN and the probe)."""
    def fake_evaluate(encoder, recipe_name, seed, data):
        zero_last = float(torch.count_nonzero(encoder.layer1[0].bn2.weight) == 0)
        var = encoder.bn1.running_var.mean().item()
        return {"knn20_top1": zero_last, "knn200_top1": var, "linear_top1": 0.0, "n_train": 1, "n_test": 1}

    monkeypatch.setattr(compare, "evaluate_encoder", fake_evaluate)
    simsiam = compare.untrained_row("simsiam_r18_digits", 1, None, None, None)
    moco = compare.untrained_row("moco_v2_r18_digits", 1, None, None, None)
    assert simsiam["knn20_top1"] == 1.0 and moco["knn20_top1"] == 0.0
    assert simsiam["method"] == "simsiam" and simsiam["encoder"] == "untrained" and simsiam["epochs"] == 0
    assert simsiam["knn200_top1_init_bn"] == pytest.approx(1.0)  # initial statistics: variance 1
    assert simsiam["knn200_top1"] != pytest.approx(1.0)  # recomputed on the digits training split
    assert "n_train_init_bn" not in simsiam


def test_collect_results_copies_the_new_table_verbatim(compare, tmp_path, monkeypatch):
    collect = load_benchmark("collect_results")
    untrained = _untrained("simsiam", 1, 0.25, 0.20)
    table = compare.markdown_table([untrained, compare.add_gains(_row("simsiam", 1, 0.35), untrained)], MACHINE,
                                   "python benchmarks/compare.py simsiam_r18 --markdown x.md")
    (tmp_path / "photo_patches_3seeds.md").write_text(table)
    monkeypatch.setattr(collect, "RESULTS", tmp_path)
    page = collect.build()
    assert table.strip() in page and "own untrained" in page


def test_same_start_gains_subtract_each_recipes_own_start_per_seed() -> None:
    gains_table = load_benchmark("same_start_gains").gains_table

    def row(recipe, seed, encoder, k20, init=None):
        r = {"method": recipe.split("_")[0], "recipe": recipe, "seed": seed, "encoder": encoder,
             "knn20_top1": k20, "knn200_top1": k20, "linear_top1": k20}
        if init is not None:
            r.update(knn20_top1_init_bn=init, knn200_top1_init_bn=init, linear_top1_init_bn=init)
        return r

    trained = [{**row("moco_r", 1, "trained", 0.50), "method": "random init"},  # another init's row: ignored
               row("moco_r", 1, "trained", 0.50), row("moco_r", 2, "trained", 0.60),
               row("simsiam_r", 1, "trained", 0.30), row("simsiam_r", 3, "trained", 0.40)]
    untrained = [row("moco_r", 1, "untrained", 0.40, 0.35), row("moco_r", 2, "untrained", 0.45, 0.30),
                 row("simsiam_r", 1, "untrained", 0.35, 0.20)]
    lines, missing = gains_table(trained, untrained)
    assert missing == ["simsiam_r seed 3"]
    moco = next(line for line in lines if "`moco_r`" in line)
    # own start 40/45 -> 42.50 ± 3.54; trained 50/60 -> 55.00 ± 7.07; gains 10 and 15 -> 12.50 ± 3.54
    assert "| 1, 2 |" in moco and "42.50 ± 3.54 / (32.50 ± 3.54) / 55.00 ± 7.07 / **12.50 ± 3.54**" in moco
    simsiam = next(line for line in lines if "`simsiam_r`" in line)
    assert "35.00 / (20.00) / 30.00 / **-5.00**" in simsiam  # one seed: no spread, a loss is a negative gain
