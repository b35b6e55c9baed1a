"""ssl_zoo.data.fingerprint: what changes a dataset's fingerprint and what does not (no image is decoded)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import make_digit_folder
from torch.utils.data import TensorDataset

from ssl_zoo.data import create_dataset
from ssl_zoo.data.fingerprint import dataset_fingerprint


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_digit_folder(tmp_path / "data", per_class=3, classes=2)


def test_a_folder_fingerprint_follows_names_sizes_and_mtimes_not_the_location(folder: Path, tmp_path: Path) -> None:
    first = dataset_fingerprint("imagefolder", folder)
    assert first.startswith("sha256:") and len(first) == 7 + 64
    assert dataset_fingerprint(create_dataset("imagefolder", root=str(folder), split="train"), folder) == first
    moved = tmp_path / "elsewhere"
    shutil.copytree(folder, moved)  # copy2 keeps the mtimes: the same files at another place
    assert dataset_fingerprint("imagefolder", moved) == first

    image = folder / "class_0" / "0.png"
    stat = image.stat()
    image.write_bytes((folder / "class_1" / "0.png").read_bytes())  # replaced in place
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime: another size
    replaced = dataset_fingerprint("imagefolder", folder)
    assert replaced != first
    os.utime(image, ns=(1, 1))
    assert dataset_fingerprint("imagefolder", folder) != replaced  # touched
    (folder / "class_1" / "0.png").rename(folder / "class_1" / "9.png")
    assert dataset_fingerprint("imagefolder", folder) != replaced  # renamed


def test_decoding_is_never_needed(folder: Path) -> None:
    (folder / "class_0" / "bad.png").write_text("not an image")  # fingerprinted like any file, never opened as one
    assert dataset_fingerprint("imagefolder", folder).startswith("sha256:")


def test_embedded_sets_hash_their_pixels() -> None:
    digits = dataset_fingerprint("digits", None)
    assert digits == dataset_fingerprint(create_dataset("digits", root=None, split="train"))
    assert digits != dataset_fingerprint("digits", None, split="test")
    subset = create_dataset("digits", root=None, split="train").subset(range(100))
    assert dataset_fingerprint(subset) != digits


def test_a_dataset_without_files_or_arrays_has_none() -> None:
    import torch

    with pytest.raises(TypeError, match="Cannot fingerprint a TensorDataset"):
        dataset_fingerprint(TensorDataset(torch.zeros(2)))


def test_the_splits_fingerprint_names_every_split_read() -> None:
    from ssl_zoo.data.fingerprint import splits_fingerprint

    train = dataset_fingerprint("digits", None)
    both = splits_fingerprint("digits", None, ["train", "test"])
    assert splits_fingerprint("digits", None, ["train"]) == train  # one split: that split's own fingerprint
    assert both not in (train, dataset_fingerprint("digits", None, split="test"))
    assert splits_fingerprint("digits", None, ["test", "train"]) == both  # order does not matter
