"""``stanford_cars``: Stanford Cars (196 classes) in torchvision's StanfordCars layout."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import FileImageDataset, checked_file_dataset, layout_error, require_base_folder, require_dir, require_files
from .registry import register_dataset

LAYOUT = """
root/                                   (the stanford_cars folder itself, or its parent)
  stanford_cars/
    devkit/cars_meta.mat                class_names (196)
    devkit/cars_train_annos.mat         annotations: fname, class (1..196), bbox
    cars_test_annos_withlabels.mat      the labelled test annotations
    cars_train/00001.jpg ...
    cars_test/00001.jpg ...
"""


def build_stanford_cars(root: Path | None, split: str, **kwargs: Any) -> FileImageDataset:
    if kwargs:
        raise TypeError(f"stanford_cars takes no extra arguments, got {sorted(kwargs)}")
    from torchvision.datasets import StanfordCars

    root = require_dir("stanford_cars", root, LAYOUT)
    base = require_base_folder("stanford_cars", root, "stanford_cars", LAYOUT)
    annos = base / "devkit" / "cars_train_annos.mat" if split == "train" else base / "cars_test_annos_withlabels.mat"
    require_files("stanford_cars", root, [base / "devkit" / "cars_meta.mat", annos,
                                          base / ("cars_train" if split == "train" else "cars_test")], LAYOUT)
    try:
        tv = StanfordCars(str(base.parent), split=split, download=False)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise layout_error("stanford_cars", root, f"torchvision could not read the annotations: {exc}", LAYOUT) from exc
    # torchvision keeps (path, label) pairs in `_samples`; we read images ourselves (RGB, errors named).
    paths = [p for p, _ in tv._samples]
    targets = [int(t) for _, t in tv._samples]
    classes = [str(c) for c in tv.classes]
    return checked_file_dataset("stanford_cars", root, paths, targets, classes, split, LAYOUT)


register_dataset("stanford_cars", build_stanford_cars, LAYOUT, ("train", "test"),
                 "Stanford Cars, 196 classes, 8,144 train / 8,041 test")
