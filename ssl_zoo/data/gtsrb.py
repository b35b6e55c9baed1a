"""``gtsrb``: German Traffic Sign Recognition Benchmark (43 classes), torchvision's GTSRB layout."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import (
    FileImageDataset,
    checked_file_dataset,
    layout_error,
    require_base_folder,
    require_dir,
    require_files,
    stratified_split,
)
from .registry import register_dataset

LAYOUT = """
root/                                 (the gtsrb folder itself, or its parent)
  gtsrb/
    GTSRB/Training/00000/*.ppm ... 00042/   one folder per class (GTSRB_Final_Training_Images.zip)
    GTSRB/Final_Test/Images/*.ppm           (GTSRB_Final_Test_Images.zip)
    GT-final_test.csv                       "Filename;...;ClassId" (GTSRB_Final_Test_GT.zip)
"""
NUM_CLASSES = 43
CLASSES = [f"{i:05d}" for i in range(NUM_CLASSES)]


def build_gtsrb(root: Path | None, split: str, **kwargs: Any) -> FileImageDataset:
    if kwargs:
        raise TypeError(f"gtsrb takes no extra arguments, got {sorted(kwargs)}")
    from torchvision.datasets import GTSRB

    root = require_dir("gtsrb", root, LAYOUT)
    base = require_base_folder("gtsrb", root, "gtsrb", LAYOUT)
    if split == "train":
        require_files("gtsrb", root, [base / "GTSRB" / "Training"], LAYOUT, "folder")
        folders = sorted(p.name for p in (base / "GTSRB" / "Training").iterdir() if p.is_dir())
        if folders != CLASSES:
            absent = sorted(set(CLASSES) - set(folders))
            extra = sorted(set(folders) - set(CLASSES))
            raise layout_error("gtsrb", root, f"GTSRB/Training must hold the 43 class folders 00000..00042; "
                               f"missing {absent[:10]}, unexpected {extra[:10]}.", LAYOUT)
    else:
        require_files("gtsrb", root, [base / "GTSRB" / "Final_Test" / "Images", base / "GT-final_test.csv"], LAYOUT)
    try:
        tv = GTSRB(str(base.parent), split=split, download=False)
    except (RuntimeError, KeyError, ValueError, FileNotFoundError) as exc:
        raise layout_error("gtsrb", root, f"torchvision could not read it: {exc}", LAYOUT) from exc
    # torchvision keeps (path, label) pairs in `_samples`; with all 43 folders present the train
    # labels (sorted folder index) equal the folder number.
    paths = [p for p, _ in tv._samples]
    targets = [int(t) for _, t in tv._samples]
    if any(not 0 <= t < NUM_CLASSES for t in targets):
        raise layout_error("gtsrb", root, "GT-final_test.csv has ClassId outside 0..42.", LAYOUT)
    return checked_file_dataset("gtsrb", root, paths, targets, CLASSES, split, LAYOUT)


register_dataset("gtsrb", build_gtsrb, LAYOUT, ("train", "test"),
                 "GTSRB traffic signs, 43 classes, 39,209 train / 12,630 test")


# The synth paper (Sec. 4.1): "We take 4800 images for training and 3750 images for testing from GTSRB".
# It does not say which; this subset is ours: stratified by class, drawn once with a fixed seed, so
# every user of `gtsrb_paper` trains and tests on the same images.
PAPER_SUBSET_SIZES = {"train": 4800, "test": 3750}
PAPER_SUBSET_SEED = 0


def paper_subset_indices(targets: list[int], size: int, seed: int = PAPER_SUBSET_SEED) -> list[int]:
    """``size`` indices, stratified by class, sorted; deterministic for ``seed``."""
    if size >= len(targets):
        return list(range(len(targets)))
    _, keep = stratified_split(targets, seed=seed, test_size=size)
    return keep


def build_gtsrb_paper(root: Path | None, split: str, **kwargs: Any) -> FileImageDataset:
    full = build_gtsrb(root, split, **kwargs)
    size = PAPER_SUBSET_SIZES[split]
    if len(full) < size:
        raise layout_error("gtsrb_paper", root, f"the {split} split has {len(full)} images, fewer than the "
                           f"paper's {size}: is the full GTSRB {split} set there?", LAYOUT)
    subset = full.subset(paper_subset_indices(full.targets, size))
    subset.name = "gtsrb_paper"
    # Recorded with the split so results name exactly which images were used.
    subset.split_note = f"{split}: {size} of {len(full)} images, stratified, seed {PAPER_SUBSET_SEED}"
    return subset


register_dataset("gtsrb_paper", build_gtsrb_paper, LAYOUT, ("train", "test"),
                 "GTSRB as the synth paper uses it: 4,800 train / 3,750 test images (stratified, seed 0)")
