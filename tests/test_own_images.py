"""Your own images, end to end (issue 20, goals 1 and 2): any recipe trains on a flat folder of unlabelled images or a
class tree, records which in config.json, and `ssl-zoo eval` scores that data (never another dataset)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_zoo.cli import main as cli_main
from ssl_zoo.data import create_dataset, detect_layout, open_user_folder, register_dataset
from ssl_zoo.data.base import DatasetLayoutError, FileImageDataset, load_image
from ssl_zoo.data.folder import IMAGE_EXTENSIONS
from ssl_zoo.train import train

# Recipes of ANOTHER dataset than the user's: cifar10 (MoCo v2) and stl10 (LeOCLR), shrunk to run in seconds.
TINY = {"arch": "test_resnet", "model_args": {}, "queue_size": 32, "image_size": 32}
RUN = dict(batch_size=16, num_workers=0, progress_bar=False, overrides=TINY)
RECIPES = {"moco": "moco_v2_r18_cifar10", "leoclr": "leoclr_r18_stl10"}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- the fixtures are what they claim ------------------------------------------------------------------------

def test_the_flat_folder_mixes_modes_formats_sizes_and_depths(flat_image_folder: Path) -> None:
    files = [p for p in flat_image_folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
             and not p.name.startswith(".")]
    assert len(files) == 60
    modes = {Image.open(p).mode for p in files}
    assert {"L", "RGB", "RGBA", "P", "I;16"} <= modes
    assert {p.suffix.lower() for p in files} >= {".png", ".jpg", ".webp", ".bmp", ".tiff"}
    assert any(p.suffix != p.suffix.lower() for p in files)  # .JPG, .Tif
    assert len({Image.open(p).size for p in files}) > 20
    assert {len(p.relative_to(flat_image_folder).parts) for p in files} == {1, 2, 3}


# -- which layout a folder has ---------------------------------------------------------------------------------

def test_a_flat_nested_folder_is_unlabelled_and_a_class_tree_is_labelled(flat_image_folder: Path,
                                                                         class_tree_folder: Path) -> None:
    flat = detect_layout(flat_image_folder, dataset="cifar10")
    assert (flat.kind, flat.dataset, flat.num_images, flat.labelled) == ("unlabelled", "unlabelled_images", 60, False)
    tree = detect_layout(class_tree_folder, dataset="digits")
    assert (tree.kind, tree.dataset, tree.num_images) == ("class_tree", "imagefolder", 60)
    assert tree.classes == tuple(f"digit_{c}" for c in range(5))
    assert "60 images" in flat.describe() and "5 classes" in tree.describe()


def test_one_class_folder_or_images_at_two_depths_are_unlabelled(class_tree_folder: Path, tmp_path: Path) -> None:
    one = tmp_path / "one"
    shutil.copytree(class_tree_folder / "digit_0", one / "photos")
    assert detect_layout(one).kind == "unlabelled"
    mixed = tmp_path / "mixed"
    shutil.copytree(class_tree_folder, mixed)
    shutil.copy(class_tree_folder / "digit_0" / "01.png", mixed / "loose.png")
    assert detect_layout(mixed).kind == "unlabelled"


def test_split_folders_of_class_trees_and_hidden_folders(class_tree_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "splits"
    for split, cls in [("train", "digit_0"), ("train", "digit_1"), ("val", "digit_0"), ("val", "digit_1")]:
        shutil.copytree(class_tree_folder / cls, root / split / cls)
    (root / "train" / ".ipynb_checkpoints").mkdir()  # Jupyter's: not a class, no images
    layout = detect_layout(root)
    assert (layout.kind, layout.classes, layout.splits, layout.num_images) == (
        "class_tree", ("digit_0", "digit_1"), ("train", "val", "test"), 24)
    assert len(create_dataset("imagefolder", root, split="test")) == 24  # test reads val/
    assert create_dataset("imagefolder", root, split="train").classes == ["digit_0", "digit_1"]


@pytest.mark.parametrize("content", ["empty", "no_image_type"])
def test_a_folder_without_images_is_one_line_naming_it_and_the_extensions(content: str, tmp_path: Path) -> None:
    folder = tmp_path / "nothing_here"
    folder.mkdir()
    if content == "no_image_type":
        (folder / "notes.txt").write_text("hello")
        (folder / "scan.gif").write_bytes(b"GIF89a")
    with pytest.raises(DatasetLayoutError) as info:
        detect_layout(folder)
    message = str(info.value)
    assert "\n" not in message and str(folder) in message
    assert all(ext in message for ext in (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"))


def test_a_broken_recipe_layout_and_no_images_name_both(tmp_path: Path) -> None:
    (tmp_path / "stl10_binary").mkdir()
    (tmp_path / "stl10_binary" / "train_X.bin").write_bytes(b"\0" * 10)
    with pytest.raises(DatasetLayoutError, match=r"No images in .*Nor is it a stl10 folder: .*stl10") as info:
        detect_layout(tmp_path, dataset="stl10")
    assert "\n" not in str(info.value)


def test_the_recipe_datasets_own_layout_comes_first(class_tree_folder: Path, tmp_path: Path) -> None:
    """A folder in the recipe dataset's layout is read by that dataset, even where it would also pass as a tree."""
    def build(root, split, **kwargs):
        if not (root / "MARKER").is_file():
            raise DatasetLayoutError(f"Dataset 'marked_tree': no MARKER in {root}")
        return FileImageDataset([root / "digit_0" / "00.jpg"], [0], ["zero"], name="marked_tree", root=root)

    register_dataset("marked_tree", build, "root/MARKER", ("train",), overwrite=True)
    root = tmp_path / "tree"
    shutil.copytree(class_tree_folder, root)
    assert detect_layout(root, dataset="marked_tree").kind == "class_tree"
    (root / "MARKER").write_text("")
    layout = detect_layout(root, dataset="marked_tree")
    assert (layout.kind, layout.dataset, layout.num_images) == ("dataset", "marked_tree", 1)


# -- reading every image -----------------------------------------------------------------------------------------

def test_open_user_folder_reads_every_image_as_rgb_with_relative_paths(flat_image_folder: Path,
                                                                       class_tree_folder: Path) -> None:
    flat = open_user_folder(flat_image_folder)
    assert len(flat) == 60 and set(flat.targets) == {-1} and flat.classes == [] and flat.layout.kind == "unlabelled"
    assert all(not Path(r).is_absolute() and (flat_image_folder / r).is_file() for r in flat.relative_paths)
    assert not any(Path(r).name.startswith(".") for r in flat.relative_paths)  # ._img_001.jpg skipped
    for i in range(len(flat)):
        image, label = flat[i]
        assert image.mode == "RGB" and label == -1
    tree = open_user_folder(class_tree_folder)
    assert tree.classes == [f"digit_{c}" for c in range(5)] and tree.targets == [c for c in range(5) for _ in range(12)]
    assert tree.relative_paths[12].startswith("digit_1/")


def test_16_bit_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    gray8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for ext in (".png", ".tiff"):
        path = tmp_path / f"deep{ext}"
        Image.fromarray(gray8.astype(np.uint16) * 257).save(path)
        assert Image.open(path).mode == "I;16"
        rgb = np.asarray(load_image(path))
        assert rgb.shape == (16, 16, 3) and np.array_equal(rgb[..., 0], gray8)  # clipping would give 255 from 1 up


def test_transparent_and_palette_images_become_rgb(flat_image_folder: Path) -> None:
    rgba = next(p for p in sorted(flat_image_folder.rglob("*.png")) if Image.open(p).mode == "RGBA")
    top_row = np.asarray(load_image(rgba))[0]
    assert (top_row == 255).all()  # the transparent band is composited on white
    palette = next(p for p in sorted(flat_image_folder.rglob("*.bmp")) if Image.open(p).mode == "P")
    assert load_image(palette).mode == "RGB"


# -- training on them --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(flat_image_folder: Path, class_tree_folder: Path, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """2 optimiser steps of each recipe on each folder."""
    out = {}
    for method, recipe in RECIPES.items():
        for kind, folder in (("flat", flat_image_folder), ("tree", class_tree_folder)):
            run = tmp_path_factory.mktemp(f"{method}_{kind}")
            result = train(recipe, data=str(folder), output=run, max_steps=2, **RUN)
            assert result["step"] == 2 and not result["interrupted"]
            out[method, kind] = run
    return out


@pytest.mark.parametrize("method", sorted(RECIPES))
@pytest.mark.parametrize("kind", ["flat", "tree"])
def test_two_steps_on_own_images_record_the_kind_and_count(runs, method: str, kind: str, flat_image_folder: Path,
                                                           class_tree_folder: Path) -> None:
    config = json.loads((runs[method, kind] / "config.json").read_text())["ssl_zoo"]
    folder = flat_image_folder if kind == "flat" else class_tree_folder
    want = ("unlabelled", "unlabelled_images", 0) if kind == "flat" else ("class_tree", "imagefolder", 5)
    data = config["data"]
    assert (data["kind"], data["dataset"], data["num_classes"]) == want
    assert data["num_images"] == 60 and Path(data["path"]) == folder.resolve()
    assert config["dataset"] == want[1] and config["train"]["data_kind"] == want[0]
    assert config["train"]["num_images"] == 60 and config["metrics"]["steps"] == 2
    state = torch.load(runs[method, kind] / "checkpoint.pt", weights_only=False, map_location="cpu")
    assert state["run"]["data_kind"] == want[0]  # resume and eval read it from the checkpoint too


def test_train_says_what_it_read(flat_image_folder: Path, tmp_path: Path, capsys) -> None:
    code = cli_main(["train", "moco_v2_r18_cifar10", "--data", str(flat_image_folder), "--max-steps", "1",
                     "--batch-size", "16", "--num-workers", "0", "--output", str(tmp_path / "run"),
                     *[f"--set={k}={v}" for k, v in TINY.items()]])
    assert code == 0
    out = capsys.readouterr().out
    assert "an unlabelled folder of 60 images" in out and "read as 'unlabelled_images'" in out
    assert "made for 'cifar10'" in out


def test_resume_on_own_images_continues(flat_image_folder: Path, tmp_path: Path) -> None:
    train(RECIPES["moco"], data=str(flat_image_folder), output=tmp_path, max_steps=1, **RUN)
    result = train(RECIPES["moco"], data=str(flat_image_folder), output=tmp_path, max_steps=2, resume=True, **RUN)
    assert result["step"] == 2


def test_knn_monitor_holds_out_part_of_a_class_tree(class_tree_folder: Path, tmp_path: Path, capsys) -> None:
    train(RECIPES["leoclr"], data=str(class_tree_folder), output=tmp_path, epochs=1, knn_every=1, **RUN)
    out = capsys.readouterr().out
    assert "20% of the class tree (12 images, seed 0), the bank the other 48" in out
    epochs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()
              if "epoch_loss" in line]
    assert len(epochs) == 1 and 0.0 <= epochs[0]["knn_top1"] <= 100.0 and epochs[0]["feature_std"] > 0


def test_knn_monitor_says_once_that_unlabelled_images_have_no_labels(flat_image_folder: Path, tmp_path: Path,
                                                                     capsys) -> None:
    train(RECIPES["moco"], data=str(flat_image_folder), output=tmp_path, epochs=2, knn_every=1, **RUN)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "--knn-every" in line]
    assert len(lines) == 1 and "no labels" in lines[0] and "off" in lines[0]
    assert "knn_top1" not in (tmp_path / "log.jsonl").read_text()


# -- evaluating them ---------------------------------------------------------------------------------------------

def test_eval_without_dataset_uses_the_runs_data(runs, class_tree_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "knn.json"
    code = cli_main(["eval", "knn", "--model", str(runs["moco", "tree"]), "--holdout", "0.2", "--num-workers", "0",
                     "--output", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"eval: dataset 'imagefolder', data {class_tree_folder.resolve()}" in printed
    result = json.loads(out.read_text())
    assert result["dataset"]["name"] == "imagefolder" and Path(result["dataset"]["root"]) == class_tree_folder.resolve()
    assert result["dataset"]["num_train"] == 48 and result["dataset"]["num_test"] == 12
    # the default k=200 is clamped to the 48-image bank, with a note; the rows come under a header
    assert "note: k 200 -> 48" in printed and set(result["metrics"]) == {"top1_k20", "top1_k48"}
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| model | dataset |"))
    # the row names the held-out part it scored, not a "test" split that is not on disk
    assert lines[header + 2].startswith(f"| {RECIPES['moco']} | imagefolder (20% held out of train (seed 0)) |")


def test_two_process_eval_takes_the_same_defaults_and_scores(runs, class_tree_folder: Path, tmp_path: Path,
                                                           launch_two_cpu_processes) -> None:
    """`accelerate launch` with 2 processes: the same default dataset and data (from the run's config), the same
    held-out split and the same k-NN scores as one process; one process prints and writes."""
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    args = ["eval", "knn", "--model", str(runs["moco", "tree"]), "--holdout", "0.2", "--k", "5", "--num-workers",
            "0", "--batch-size", "8"]
    assert cli_main([*args, "--output", str(one)]) == 0
    proc = launch_two_cpu_processes(["-m", "ssl_zoo.cli", *args, "--output", str(two)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count(f"eval: dataset 'imagefolder', data {class_tree_folder.resolve()}") == 1
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert b["world_size"] == 2 and a["dataset"] == b["dataset"]
    assert b["metrics"] == pytest.approx(a["metrics"], abs=1e-9)


def test_eval_of_a_class_tree_without_test_split_proposes_holdout(runs, capsys) -> None:
    assert cli_main(["eval", "knn", "--model", str(runs["leoclr", "tree"]), "--num-workers", "0"]) == 2
    assert "--holdout 0.2" in _one_error_line(capsys)


def test_eval_of_unlabelled_images_needs_labels(runs, flat_image_folder: Path, capsys) -> None:
    for argv in (["--model", str(runs["moco", "flat"])],
                 ["--model", str(runs["moco", "tree"]), "--data", str(flat_image_folder)]):
        assert cli_main(["eval", "knn", *argv, "--num-workers", "0"]) == 2
        line = _one_error_line(capsys)
        assert "needs labels" in line and "--holdout" in line and str(flat_image_folder) in line


def test_data_given_to_an_embedded_dataset_is_an_error(runs, class_tree_folder: Path, capsys) -> None:
    for dataset in ("digits", "photo_patches"):
        code = cli_main(["eval", "knn", "--model", str(runs["moco", "tree"]), "--dataset", dataset, "--data",
                         str(class_tree_folder), "--num-workers", "0"])
        assert code == 2
        line = _one_error_line(capsys)
        assert "reads no folder" in line and dataset in line


def test_eval_data_without_dataset_reads_the_folder_not_digits(runs, class_tree_folder: Path, tmp_path: Path,
                                                              capsys) -> None:
    """The issue's case: `eval knn --model RUN --data FOLDER` scored the embedded digits."""
    out = tmp_path / "knn.json"
    assert cli_main(["eval", "knn", "--model", str(runs["leoclr", "flat"]), "--data", str(class_tree_folder),
                     "--holdout", "0.2", "--k", "5", "--num-workers", "0", "--output", str(out)]) == 0
    assert "a class tree of 60 images" in capsys.readouterr().out
    assert json.loads(out.read_text())["dataset"]["name"] == "imagefolder"


def test_an_explicit_k_larger_than_the_bank_is_still_an_error(runs, capsys) -> None:
    assert cli_main(["eval", "knn", "--model", str(runs["moco", "tree"]), "--holdout", "0.2", "--k", "100",
                     "--num-workers", "0"]) == 2
    assert "--k 100" in _one_error_line(capsys)


def test_clamp_k() -> None:
    from ssl_zoo.evaluation.metrics import clamp_k

    assert clamp_k((20, 200), 1000) == ([20, 200], None)
    ks, note = clamp_k((20, 200), 48)
    assert ks == [20, 48] and "200 -> 48" in note
    assert clamp_k((20, 200), 10)[0] == [10]


# -- the linear probe says when its loss explodes ----------------------------------------------------------------

def test_divergence_warning_names_the_lr_and_the_feature_scale() -> None:
    from ssl_zoo.evaluation.linear import divergence_warning

    assert divergence_warning([1.6, 0.9, 0.4], 5, 30.0, 1.0) is None
    rose = divergence_warning([1.6, 2.5, 1.9], 5, 30.0, 1.0)
    assert rose is not None and "rose" in rose and "\n" not in rose
    exploded = divergence_warning([14611.0, 9000.0, 5529.0], 5, 30.0, 50.0)
    assert exploded is not None and "exploded" in exploded and "epoch 1 14,611" in exploded
    assert "try --lr 0.1" in exploded
    assert "exploded" in divergence_warning([1.6, math.inf], 5, 30.0, 1.0)


def test_probe_on_large_features_with_lr_30_warns_once() -> None:
    from ssl_zoo.evaluation.linear import linear_probe_on_features

    gen = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 5
    x = torch.randn(60, 64, generator=gen).abs() * 2 + torch.nn.functional.one_hot(y, 64)  # norms ~ 13, like a ResNet's
    logged: list[str] = []
    linear_probe_on_features(x, y, x, y, epochs=20, lr=30.0, milestones=(12, 16), log=logged.append, log_every=100)
    warnings = [m for m in logged if m.startswith("warning:")]
    assert len(warnings) == 1 and "exploded" in warnings[0]
    logged.clear()
    suggested = float(warnings[0].rsplit("--lr ", 1)[1].rstrip("."))
    linear_probe_on_features(x, y, x, y, epochs=20, lr=suggested, milestones=(12, 16), log=logged.append,
                             log_every=100)
    assert not [m for m in logged if m.startswith("warning:")]


def test_eval_of_an_unfinished_run_reads_the_data_from_its_checkpoint(runs, class_tree_folder: Path,
                                                                     tmp_path: Path, capsys) -> None:
    run = tmp_path / "stopped"
    run.mkdir()
    shutil.copy(runs["moco", "tree"] / "checkpoint.pt", run / "checkpoint.pt")  # no export yet
    assert cli_main(["eval", "knn", "--model", str(run), "--holdout", "0.2", "--k", "5", "--num-workers", "0"]) == 0
    assert f"eval: dataset 'imagefolder', data {class_tree_folder.resolve()}" in capsys.readouterr().out
