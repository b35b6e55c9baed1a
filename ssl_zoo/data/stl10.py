"""``stl10``: STL-10 binary archive (stl10_binary.tar.gz, extracted), read by torchvision."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .base import ArrayImageDataset, layout_error, require_base_folder, require_dir, require_files
from .registry import register_dataset

LAYOUT = """
root/                         (the stl10_binary folder itself, or its parent)
  stl10_binary/
    train_X.bin, train_y.bin          5,000 labelled (split "train")
    test_X.bin, test_y.bin            8,000 labelled (split "test")
    unlabeled_X.bin                   100,000 unlabelled (splits "unlabeled", "train+unlabeled")
    class_names.txt, fold_indices.txt
"""
CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
NEEDS = {"train": ["train_X.bin", "train_y.bin"], "test": ["test_X.bin", "test_y.bin"],
         "unlabeled": ["unlabeled_X.bin"], "train+unlabeled": ["train_X.bin", "train_y.bin", "unlabeled_X.bin"]}


def _reader(verify: bool, needed: list[str]) -> type:
    from torchvision.datasets import STL10

    class Reader(STL10):
        def _check_integrity(self) -> bool:
            # torchvision checks all five files; a split only needs its own (unlabeled_X.bin is 2.6 GB).
            for filename, md5 in self.train_list + self.test_list:
                if filename not in needed:
                    continue
                path = os.path.join(self.root, self.base_folder, filename)
                if not os.path.isfile(path):
                    return False
                if verify:
                    from torchvision.datasets.utils import check_integrity
                    if not check_integrity(path, md5):
                        return False
            return True

    return Reader


def build_stl10(root: Path | None, split: str, verify_checksums: bool = True, folds: int | None = None,
                **kwargs: Any) -> ArrayImageDataset:
    """Unlabelled images have target -1 (use split "unlabeled" or "train+unlabeled" for pre-training)."""
    if kwargs:
        raise TypeError(f"stl10 takes verify_checksums and folds, got {sorted(kwargs)}")
    root = require_dir("stl10", root, LAYOUT)
    base = require_base_folder("stl10", root, "stl10_binary", LAYOUT)
    require_files("stl10", root, [base / f for f in NEEDS[split]], LAYOUT)
    try:
        tv = _reader(verify_checksums, NEEDS[split])(str(base.parent), split=split, folds=folds, download=False)
    except RuntimeError as exc:
        raise layout_error("stl10", root, f"{exc}. The files exist, so their MD5 sums differ from the official "
                           "archive's; pass verify_checksums=False to read them anyway.", LAYOUT) from None
    except ValueError as exc:
        raise layout_error("stl10", root, f"cannot parse the binary files: {exc}", LAYOUT) from None
    images = np.ascontiguousarray(tv.data.transpose(0, 2, 3, 1))  # torchvision keeps (N, 3, 96, 96)
    classes = list(getattr(tv, "classes", CLASSES))
    return ArrayImageDataset(images, tv.labels, classes, name="stl10", root=root, split=split)


register_dataset("stl10", build_stl10, LAYOUT, tuple(NEEDS),
                 "STL-10, 96 px, 10 classes; 5,000 train / 8,000 test / 100,000 unlabeled")
