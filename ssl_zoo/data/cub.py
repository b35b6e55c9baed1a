"""``cub200``: Caltech-UCSD Birds-200-2011 in its published layout (the CUB_200_2011.tgz archive)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import FileImageDataset, checked_file_dataset, layout_error, require_dir, require_files
from .registry import register_dataset

LAYOUT = """
root/                       (the CUB_200_2011 folder itself, or its parent)
  CUB_200_2011/
    images.txt              "<image_id> <class_folder>/<file>.jpg"
    image_class_labels.txt  "<image_id> <class_id 1..200>"
    train_test_split.txt    "<image_id> <1 = train, 0 = test>"
    classes.txt             "<class_id> <NNN.Class_name>"
    images/001.Black_footed_Albatross/*.jpg ...
"""
FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")


def _read_pairs(path: Path, name: str, root: Path) -> dict[int, str]:
    pairs = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise layout_error(name, root, f"{path} line {n} is not '<id> <value>': {line!r}", LAYOUT)
        pairs[int(parts[0])] = parts[1].strip()
    return pairs


def build_cub(root: Path | None, split: str, **kwargs: Any) -> FileImageDataset:
    if kwargs:
        raise TypeError(f"cub200 takes no extra arguments, got {sorted(kwargs)}")
    root = require_dir("cub200", root, LAYOUT)
    base = root / "CUB_200_2011" if (root / "CUB_200_2011").is_dir() else root
    require_files("cub200", root, [base / f for f in FILES] + [base / "images"], LAYOUT)
    images = _read_pairs(base / "images.txt", "cub200", root)
    labels = _read_pairs(base / "image_class_labels.txt", "cub200", root)
    is_train = _read_pairs(base / "train_test_split.txt", "cub200", root)
    class_rows = _read_pairs(base / "classes.txt", "cub200", root)
    class_ids = sorted(class_rows)
    if class_ids != list(range(1, len(class_ids) + 1)):
        raise layout_error("cub200", root, "classes.txt ids are not 1..N.", LAYOUT)
    # "001.Black_footed_Albatross" -> "Black_footed_Albatross"
    classes = [class_rows[i].split(".", 1)[-1] for i in class_ids]
    missing = sorted(set(images) - set(labels) | set(images) - set(is_train))
    if missing:
        raise layout_error("cub200", root, f"{len(missing)} image ids of images.txt have no label or split "
                           f"(first: {missing[:5]}).", LAYOUT)
    want = "1" if split == "train" else "0"
    ids = [i for i in sorted(images) if is_train[i] == want]
    paths = [base / "images" / images[i] for i in ids]
    targets = [int(labels[i]) - 1 for i in ids]
    if any(not 0 <= t < len(classes) for t in targets):
        raise layout_error("cub200", root, "image_class_labels.txt has class ids outside classes.txt.", LAYOUT)
    return checked_file_dataset("cub200", root, paths, targets, classes, split, LAYOUT)


register_dataset("cub200", build_cub, LAYOUT, ("train", "test"),
                 "CUB-200-2011 birds, 200 classes, official 5,994 train / 5,794 test split")
