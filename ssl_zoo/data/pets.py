"""``oxford_pets``: Oxford-IIIT Pets (37 breeds) in its published layout (images.tar.gz + annotations.tar.gz).

Splits are the official ``annotations/trainval.txt`` (3,680 images) and ``annotations/test.txt``
(3,669). Each line is ``<image name> <class id 1..37> <species 1 cat, 2 dog> <breed id>``; the class
name is the image name without its trailing ``_<number>`` (``Abyssinian_100`` -> ``Abyssinian``),
as in torchvision's ``OxfordIIITPet`` (which capitalises it: ``Abyssinian``, ``American Bulldog``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import FileImageDataset, checked_file_dataset, find_base_folder, layout_error, require_dir, require_files
from .registry import register_dataset

LAYOUT = """
root/                               (the oxford-iiit-pet folder itself, or its parent)
  oxford-iiit-pet/
    images/Abyssinian_1.jpg ...       (images.tar.gz, extracted)
    annotations/trainval.txt          "<image> <class id 1..37> <species> <breed id>" (annotations.tar.gz)
    annotations/test.txt
"""
SPLIT_FILES = {"train": "trainval.txt", "test": "test.txt"}


def _class_name(image: str) -> str:
    return " ".join(part.title() for part in image.rsplit("_", 1)[0].split("_"))


def build_oxford_pets(root: Path | None, split: str, **kwargs: Any) -> FileImageDataset:
    if kwargs:
        raise TypeError(f"oxford_pets takes no extra arguments, got {sorted(kwargs)}")
    root = require_dir("oxford_pets", root, LAYOUT)
    base = find_base_folder(root, "oxford-iiit-pet") or root
    lists = {s: base / "annotations" / f for s, f in SPLIT_FILES.items()}
    require_files("oxford_pets", root, [base / "images", lists["train"], lists["test"]], LAYOUT)
    # Class ids and names from both lists, so train and test agree even if a class is missing from one.
    names: dict[int, str] = {}
    rows: dict[str, list[tuple[str, int]]] = {}
    for s in ("train", "test"):
        rows[s] = []
        for n, line in enumerate(lists[s].read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                raise layout_error("oxford_pets", root, f"{lists[s]} line {n} is not '<image> <class id> ...': "
                                   f"{line!r}", LAYOUT)
            image, class_id = parts[0], int(parts[1])
            name = _class_name(image)
            if names.setdefault(class_id, name) != name:
                raise layout_error("oxford_pets", root, f"{lists[s]} line {n}: class id {class_id} is "
                                   f"{names[class_id]!r} elsewhere but {name!r} here.", LAYOUT)
            rows[s].append((image, class_id))
    ids = sorted(names)
    if ids != list(range(1, len(ids) + 1)):
        raise layout_error("oxford_pets", root, f"class ids are not 1..N (found {ids[:5]} ... {ids[-3:]}).", LAYOUT)
    classes = [names[i] for i in ids]
    chosen = rows["test" if split == "test" else "train"]
    if not chosen:
        raise layout_error("oxford_pets", root, f"{lists['test' if split == 'test' else 'train']} lists no image.",
                           LAYOUT)
    paths = [base / "images" / f"{image}.jpg" for image, _ in chosen]
    targets = [class_id - 1 for _, class_id in chosen]
    return checked_file_dataset("oxford_pets", root, paths, targets, classes, split, LAYOUT)


register_dataset("oxford_pets", build_oxford_pets, LAYOUT, ("train", "test"),
                 "Oxford-IIIT Pets, 37 breeds, official 3,680 trainval (split 'train') / 3,669 test")
