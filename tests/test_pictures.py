"""The pictures (curves, neighbours, map) and the run README, checked on their content: pixels that are not blank,
sizes that follow the inputs, pictures that change with the data."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pictures_fixtures import make_class_tree, make_flat_folder
from PIL import Image
from test_evaluation_features import export_tiny_encoder

import ssl_zoo
from ssl_zoo.cli import main as cli_main


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def assert_not_blank(path: Path, min_colours: int = 3) -> np.ndarray:
    image = pixels(path)
    assert image.std() > 20, f"{path} is (nearly) one colour"
    # several distinct, saturated colours (lines, classes), not just black and white
    saturated = image[(image.max(axis=2).astype(int) - image.min(axis=2)) > 80]
    hues = {tuple(c) for c in (saturated // 64).tolist()}
    assert len(hues) >= min_colours, f"{path}: only {len(hues)} colour(s)"
    return image


# -- curves -------------------------------------------------------------------------------------------------------

def write_log(run: Path, loss_scale: float = 1.0, knn: bool = True, steps: int = 30) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    records = []
    for step in range(2, steps + 1, 2):
        loss = loss_scale * (5.0 - 2.0 * step / steps)
        records.append({"step": step, "epoch": 1 + step // 10, "loss": loss, "loss_a": 0.7 * loss,
                        "loss_b": 0.3 * loss, "pos_sim": 0.5 + step / 100, "lr": 0.03 * step / steps,
                        "images_per_s": 100.0})
        if step % 10 == 0:
            epoch = {"step": step, "epoch": step // 10, "epoch_loss": loss, "lr": 0.03}
            if knn:
                epoch |= {"knn_top1": 20.0 + step, "feature_std": 0.05 + step / 1000}
            records.append(epoch)
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "config.json").write_text(json.dumps({"num_features": 64}))
    return run


def test_plot_draws_every_logged_series_and_changes_with_the_log(tmp_path: Path) -> None:
    a = write_log(tmp_path / "a")
    assert cli_main(["plot", str(a)]) == 0
    first = assert_not_blank(a / "curves.png")
    write_log(a, loss_scale=3.0)
    assert cli_main(["plot", str(a)]) == 0
    second = pixels(a / "curves.png")
    assert first.shape == second.shape and (first != second).any(axis=2).mean() > 0.005
    # without the monitor the k-NN and collapse panels are gone: a smaller picture
    b = write_log(tmp_path / "b", knn=False)
    assert cli_main(["plot", str(b)]) == 0
    assert pixels(b / "curves.png").shape[0] < first.shape[0]


def test_plot_overlays_runs_and_needs_an_output_for_several(tmp_path: Path, capsys) -> None:
    a, b = write_log(tmp_path / "a"), write_log(tmp_path / "b", loss_scale=2.0)
    assert cli_main(["plot", str(a), str(b)]) == 2
    assert "--output" in capsys.readouterr().err
    out = tmp_path / "ab.png"
    assert cli_main(["plot", str(a), str(b), "--output", str(out)]) == 0
    assert_not_blank(out, min_colours=2)
    from ssl_zoo.plots import _panels, read_curves

    runs = [read_curves(a), read_curves(b)]
    assert _panels(runs) == ["loss", "other", "lr", "knn", "collapse"]
    assert runs[1].steps["loss"][1][0] == pytest.approx(2 * runs[0].steps["loss"][1][0])


def test_plot_without_a_log_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert cli_main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "log.jsonl" in err and len(err.splitlines()) == 1


# -- a real run: curves.png, README.md, and eval's row in it ------------------------------------------------------

RECIPE = ssl_zoo.get_recipe("moco_v2_r18_digits").with_overrides(arch="test_resnet", model_args={}, queue_size=64,
                                                                  num_workers=0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from ssl_zoo.train import train

    out = tmp_path_factory.mktemp("run")
    train(RECIPE, output=out, batch_size=16, max_steps=3, log_every=1, progress_bar=False)
    return out


def test_training_writes_curves_and_a_readme_naming_the_steps_done(run_dir: Path) -> None:
    assert_not_blank(run_dir / "curves.png", min_colours=1)
    readme = (run_dir / "README.md").read_text()
    assert "3 of 3 planned optimiser steps" in readme and "moco_v2_r18_digits" in readme
    assert "1,257 images" in readme and "![training curves](curves.png)" in readme
    assert f"--model {run_dir}" in readme and f"ssl-zoo push {run_dir}" in readme and "--resume" in readme
    assert "No evaluation yet" in readme


def test_eval_adds_its_row_to_the_run_readme_once(run_dir: Path) -> None:
    for _ in range(2):  # the same evaluation twice: one row, replaced
        assert cli_main(["eval", "knn", "--model", str(run_dir), "--k", "5", "--num-workers", "0"]) == 0
    readme = (run_dir / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| ") and "k-NN" in line]
    assert len(rows) == 1 and "top-1 k=5" in rows[0] and "No evaluation yet" not in readme


def test_update_run_readme_leaves_other_folders_and_readmes_alone(tmp_path: Path, run_dir: Path) -> None:
    from ssl_zoo.run_readme import update_run_readme

    record = {"metrics": {"top1_k5": 50.0}, "model": {"name": "x", "source": "local"},
              "dataset": {"name": "digits"}, "protocol": "knn", "settings": {"temperature": 0.07},
              "world_size": 1, "wall_time_s": 1.0}
    assert not update_run_readme(tmp_path, record)  # not a run folder
    assert not update_run_readme("moco_v2_r18_digits", record)  # a recipe name
    other = tmp_path / "card"
    other.mkdir()
    for name in ("log.jsonl", "config.json"):
        (other / name).write_text((run_dir / name).read_text())
    (other / "README.md").write_text("# my own notes\n")
    assert not update_run_readme(other, record) and (other / "README.md").read_text() == "# my own notes\n"
    from ssl_zoo.run_readme import describe_run

    describe_run(other, log=lambda line: None)  # the end of a training run: curves yes, README untouched
    assert (other / "README.md").read_text() == "# my own notes\n" and (other / "curves.png").is_file()


def test_a_picture_that_cannot_be_drawn_never_fails_training(tmp_path: Path, monkeypatch) -> None:
    import ssl_zoo.plots
    from ssl_zoo.train import train

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(ssl_zoo.plots, "draw_curves", broken)
    with pytest.warns(RuntimeWarning, match="could not draw"):
        result = train(RECIPE, output=tmp_path / "run", batch_size=16, max_steps=1, progress_bar=False)
    assert Path(result["model"]).is_file() and (tmp_path / "run" / "README.md").is_file()
    assert not (tmp_path / "run" / "curves.png").exists()


# -- neighbours and map -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return export_tiny_encoder(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_class_tree(tmp_path_factory.mktemp("tree"), classes=4, per_class=8)


@pytest.fixture(scope="module")
def flat(tmp_path_factory) -> Path:
    return make_flat_folder(tmp_path_factory.mktemp("flat"))


def _neighbors(model_dir: str, data: Path, out: Path, *extra: str) -> np.ndarray:
    assert cli_main(["neighbors", "--model", model_dir, "--data", str(data), "--output", str(out),
                     "--num-workers", "0", *extra]) == 0
    return pixels(out)


def test_neighbors_grid_grows_with_queries_and_k(model_dir: str, tree: Path, tmp_path: Path) -> None:
    small = _neighbors(model_dir, tree, tmp_path / "q2k2.png", "--num-queries", "2", "--k", "2")
    taller = _neighbors(model_dir, tree, tmp_path / "q4k2.png", "--num-queries", "4", "--k", "2")
    wider = _neighbors(model_dir, tree, tmp_path / "q2k5.png", "--num-queries", "2", "--k", "5")
    assert taller.shape[0] > 1.6 * small.shape[0] and taller.shape[1] == small.shape[1]
    assert wider.shape[1] > 1.6 * small.shape[1] and wider.shape[0] == small.shape[0]
    assert_not_blank(tmp_path / "q2k5.png", min_colours=1)  # thumbnails + green / red captions


def test_neighbors_of_given_queries_inside_and_outside_the_folder(model_dir: str, flat: Path, tree: Path,
                                                                  tmp_path: Path, capsys) -> None:
    image = _neighbors(model_dir, flat, tmp_path / "q.png", "--k", "3", "--query", str(flat / "img_00.png"),
                       str(tree / "digit_1" / "0.png"))
    assert image.std() > 20 and "broken.png" in capsys.readouterr().out  # the unreadable file is reported
    assert cli_main(["neighbors", "--model", model_dir, "--data", str(flat), "--query", str(tmp_path / "no.png"),
                     "--output", str(tmp_path / "x.png")]) == 2


def test_nearest_neighbors_excludes_the_query_and_breaks_ties_by_index() -> None:
    from ssl_zoo.evaluation.metrics import nearest_neighbors

    gallery = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 0.1]])
    idx, sims = nearest_neighbors(gallery[[1]], gallery, k=3, exclude=torch.tensor([1]))
    assert idx.tolist() == [[0, 3, 4]] and sims[0, :2].tolist() == pytest.approx([1.0, 1.0])
    idx, _ = nearest_neighbors(gallery[[2]], gallery, k=4)
    assert idx[0, 0] == 2  # without exclusion the query finds itself first
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbors(gallery[[0]], gallery, k=5, exclude=torch.tensor([0]))


def test_map_colours_classes_and_draws_thumbnails(model_dir: str, tree: Path, flat: Path, tmp_path: Path) -> None:
    base = ["--model", model_dir, "--num-workers", "0"]
    assert cli_main(["map", *base, "--data", str(tree), "--output", str(tmp_path / "pca.png")]) == 0
    assert_not_blank(tmp_path / "pca.png", min_colours=4)  # four class colours
    assert cli_main(["map", *base, "--data", str(tree), "--method", "tsne", "--thumbnails",
                     "--output", str(tmp_path / "tsne.png")]) == 0
    thumbs = pixels(tmp_path / "tsne.png")
    dots = pixels(tmp_path / "pca.png")
    dark = (thumbs.max(axis=2) < 40).mean()  # the digit scans are mostly black; dots on white are not
    assert dark > 5 * max((dots.max(axis=2) < 40).mean(), 1e-4)
    assert cli_main(["map", *base, "--data", str(flat), "--output", str(tmp_path / "flat.png")]) == 0
    assert pixels(tmp_path / "flat.png").std() > 20


def test_map_umap_without_the_extra_is_a_one_line_error(model_dir: str, tree: Path, tmp_path: Path, capsys,
                                                         monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)
    assert cli_main(["map", "--model", model_dir, "--data", str(tree), "--method", "umap",
                     "--output", str(tmp_path / "u.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "ssl_zoo[map]" in err and len(err.splitlines()) == 1 and not (tmp_path / "u.png").exists()


@pytest.mark.parametrize("command", ["embed", "plot", "neighbors", "map"])
def test_help_of_the_new_commands_imports_nothing_heavy(command: str) -> None:
    import subprocess

    probe = ("import sys, contextlib, io\nimport ssl_zoo.cli\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             "    try: ssl_zoo.cli.main([sys.argv[1], '--help'])\n"
             "    except SystemExit: pass\n"
             "print(','.join(m for m in ('torch', 'timm', 'matplotlib', 'torchvision') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe, command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


@pytest.mark.parametrize("k", [1, 3, 7, 12])
def test_top_columns_is_the_stable_sort_prefix_with_ties(k: int) -> None:
    from ssl_zoo.evaluation.metrics import _top_columns

    g = torch.Generator().manual_seed(k)
    similarity = torch.randint(-3, 4, (40, 12), generator=g).float() / 4  # ties everywhere, across the k-th too
    similarity[0] = 0.0
    similarity[1, ::2] = -0.0  # signed zeros compare equal
    expected = torch.sort(similarity, dim=1, descending=True, stable=True).indices[:, :k]
    assert torch.equal(_top_columns(similarity, k), expected)
