"""``aircraft``: FGVC-Aircraft 2013b at the variant level (100 classes), torchvision's FGVCAircraft."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import FileImageDataset, checked_file_dataset, layout_error, require_base_folder, require_dir, require_files
from .registry import register_dataset

LAYOUT = """
root/                                    (the fgvc-aircraft-2013b folder itself, or its parent)
  fgvc-aircraft-2013b/data/
    variants.txt                         100 variant names
    images_variant_trainval.txt          "<image_id> <variant>" (split "train")
    images_variant_test.txt              (split "test")
    images_variant_train.txt, images_variant_val.txt   (splits "train_only", "val")
    images/<image_id>.jpg
"""
# Split "train" is the published trainval set (6,667 images), as used for training in the papers.
SPLITS = {"train": "trainval", "test": "test", "val": "val", "train_only": "train", "trainval": "trainval"}


def build_aircraft(root: Path | None, split: str, annotation_level: str = "variant", **kwargs: Any) -> FileImageDataset:
    if kwargs:
        raise TypeError(f"aircraft takes only annotation_level, got {sorted(kwargs)}")
    from torchvision.datasets import FGVCAircraft

    root = require_dir("aircraft", root, LAYOUT)
    base = require_base_folder("aircraft", root, "fgvc-aircraft-2013b", LAYOUT)
    tv_split = SPLITS[split]
    names = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
    if annotation_level not in names:
        raise ValueError(f"annotation_level must be one of {sorted(names)}, got {annotation_level!r}")
    require_files("aircraft", root, [base / "data" / names[annotation_level],
                                     base / "data" / f"images_{annotation_level}_{tv_split}.txt",
                                     base / "data" / "images"], LAYOUT)
    try:
        tv = FGVCAircraft(str(base.parent), split=tv_split, annotation_level=annotation_level, download=False)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise layout_error("aircraft", root, f"torchvision could not read the annotations: {exc}", LAYOUT) from exc
    # torchvision keeps the file list in `_image_files` / `_labels`; we read images ourselves.
    paths, targets, classes = list(tv._image_files), [int(t) for t in tv._labels], list(tv.classes)
    return checked_file_dataset("aircraft", root, paths, targets, classes, split, LAYOUT)


register_dataset("aircraft", build_aircraft, LAYOUT, tuple(SPLITS),
                 "FGVC-Aircraft variants, 100 classes; 'train' = trainval (6,667), 'test' 3,333")
