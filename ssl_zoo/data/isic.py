"""``isic2017``: ISIC 2017 skin lesions, task 3 (melanoma / seborrheic keratosis / nevus)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from .base import FileImageDataset, checked_file_dataset, layout_error, require_dir, require_files
from .registry import register_dataset

LAYOUT = """
root/
  ISIC-2017_Training_Data/ISIC_0000000.jpg ...          (split "train", 2,000 images)
  ISIC-2017_Training_Part3_GroundTruth.csv              image_id,melanoma,seborrheic_keratosis
  ISIC-2017_Validation_Data/ ...                        (split "val", 150)
  ISIC-2017_Validation_Part3_GroundTruth.csv
  ISIC-2017_Test_v2_Data/ ...                           (split "test", 600)
  ISIC-2017_Test_v2_Part3_GroundTruth.csv
"""
CLASSES = ["melanoma", "seborrheic keratosis", "nevus"]
PREFIX = {"train": "ISIC-2017_Training", "val": "ISIC-2017_Validation", "test": "ISIC-2017_Test_v2"}


def _flag(value: str, path: Path, row: int) -> bool:
    try:
        return float(value) >= 0.5
    except ValueError:
        raise ValueError(f"{path} row {row}: expected 0 or 1, got {value!r}") from None


def build_isic2017(root: Path | None, split: str, **kwargs: Any) -> FileImageDataset:
    if kwargs:
        raise TypeError(f"isic2017 takes no extra arguments, got {sorted(kwargs)}")
    root = require_dir("isic2017", root, LAYOUT)
    images = root / f"{PREFIX[split]}_Data"
    gt = root / f"{PREFIX[split]}_Part3_GroundTruth.csv"
    require_files("isic2017", root, [images, gt], LAYOUT)
    paths, targets = [], []
    with open(gt, newline="") as f:
        reader = csv.DictReader(f)
        need = {"image_id", "melanoma", "seborrheic_keratosis"}
        if not need <= set(reader.fieldnames or []):
            raise layout_error("isic2017", root, f"{gt} must have columns {sorted(need)}, has {reader.fieldnames}.",
                               LAYOUT)
        for n, row in enumerate(reader, 2):
            try:
                mel = _flag(row["melanoma"], gt, n)
                sk = _flag(row["seborrheic_keratosis"], gt, n)
            except ValueError as exc:
                raise layout_error("isic2017", root, str(exc), LAYOUT) from None
            if mel and sk:
                raise layout_error("isic2017", root, f"{gt} row {n}: {row['image_id']} is both melanoma and "
                                   "seborrheic keratosis.", LAYOUT)
            paths.append(images / f"{row['image_id']}.jpg")
            targets.append(0 if mel else 1 if sk else 2)  # neither -> nevus (benign)
    return checked_file_dataset("isic2017", root, paths, targets, CLASSES, split, LAYOUT)


register_dataset("isic2017", build_isic2017, LAYOUT, ("train", "val", "test"),
                 "ISIC 2017 task 3 lesions: melanoma / seborrheic keratosis / nevus; 2,000 / 150 / 600")
