"""``birdsnap``: Birdsnap v1.1 (500 North American bird species) as distributed.

The distribution (``birdsnap.tgz``) holds ``species.txt``, ``images.txt`` and ``test_images.txt``
(tab-separated, one header line each) and ``get_birdsnap.py``, which downloads the images from their
Flickr URLs into ``images/<species dir>/<file>.jpg`` (under ``download/`` by default). The test split
is the 2,443 images of ``test_images.txt``; the train split is every other image of ``images.txt``.

Many of the URLs no longer resolve, so a local copy usually lacks some images: images listed but not
on disk are left out of both splits, with a warning giving the counts (the dataset records them in
``num_missing``). Report those counts next to results: they change the test set.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from .base import FileImageDataset, check_classes_nonempty, layout_error, require_dir, require_files
from .registry import register_dataset

LAYOUT = """
root/                        (the extracted birdsnap.tgz folder)
  species.txt                tab-separated, header "id common scientific dir", ids 1..500
  images.txt                 tab-separated, header "url md5 path species_id ...", path = "<dir>/<file>.jpg"
  test_images.txt            header "path", then the 2,443 test image paths
  images/<dir>/<file>.jpg    downloaded by get_birdsnap.py (download/images/ is accepted too)
"""


def _read_table(path: Path, root: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise layout_error("birdsnap", root, f"{path} is empty.", LAYOUT)
    header = [h.strip() for h in lines[0].split("\t")]
    missing = [c for c in columns if c not in header]
    if missing:
        raise layout_error("birdsnap", root, f"{path} has no column(s) {missing} in its header line "
                           f"({lines[0][:80]!r}); is it the file of the Birdsnap distribution?", LAYOUT)
    at = {c: header.index(c) for c in columns}
    rows = []
    for n, line in enumerate(lines[1:], 2):
        cells = line.split("\t")
        if len(cells) <= max(at.values()):
            raise layout_error("birdsnap", root, f"{path} line {n} has {len(cells)} tab-separated fields, fewer "
                               f"than its header: {line[:80]!r}", LAYOUT)
        rows.append({c: cells[i].strip() for c, i in at.items()})
    return rows


def build_birdsnap(root: Path | None, split: str, **kwargs: Any) -> FileImageDataset:
    if kwargs:
        raise TypeError(f"birdsnap takes no extra arguments, got {sorted(kwargs)}")
    root = require_dir("birdsnap", root, LAYOUT)
    require_files("birdsnap", root, [root / f for f in ("species.txt", "images.txt", "test_images.txt")], LAYOUT)
    image_dir = next((d for d in (root / "images", root / "download" / "images") if d.is_dir()), None)
    if image_dir is None:
        raise layout_error("birdsnap", root, "no images/ (or download/images/) folder: run the distribution's "
                           "get_birdsnap.py to download the images.", LAYOUT)
    species = _read_table(root / "species.txt", root, ("id", "dir"))
    try:
        by_id = {int(r["id"]): r["dir"] for r in species}
    except ValueError:
        raise layout_error("birdsnap", root, "species.txt has a non-integer id.", LAYOUT) from None
    ids = sorted(by_id)
    if ids != list(range(1, len(ids) + 1)):
        raise layout_error("birdsnap", root, "species.txt ids are not 1..N.", LAYOUT)
    classes = [by_id[i] for i in ids]
    images = _read_table(root / "images.txt", root, ("path", "species_id"))
    test_paths = [line.strip() for line in (root / "test_images.txt").read_text().splitlines()[1:] if line.strip()]
    listed = {r["path"] for r in images}
    unknown = [p for p in test_paths if p not in listed]
    if unknown:
        raise layout_error("birdsnap", root, f"{len(unknown)} path(s) of test_images.txt are not in images.txt "
                           f"(first: {unknown[:3]}).", LAYOUT)
    test_set = set(test_paths)
    paths, targets, missing = [], [], 0
    for r in images:
        if (r["path"] in test_set) != (split == "test"):
            continue
        if not r["species_id"].isdigit() or not 1 <= int(r["species_id"]) <= len(classes):
            raise layout_error("birdsnap", root, f"images.txt: species_id {r['species_id']!r} of {r['path']} is not "
                               f"an id of species.txt.", LAYOUT)
        path = image_dir / r["path"]
        if not path.is_file():
            missing += 1
            continue
        paths.append(path)
        targets.append(int(r["species_id"]) - 1)
    listed_n = len(paths) + missing
    if not paths:
        raise layout_error("birdsnap", root, f"none of the {listed_n} images of split {split!r} is under {image_dir}.",
                           LAYOUT)
    if missing:
        warnings.warn(f"birdsnap {split}: {missing} of {listed_n} listed images are not under {image_dir} (dead "
                      f"download URLs?); using the {len(paths)} present.", RuntimeWarning, stacklevel=2)
    if split == "train":
        check_classes_nonempty("birdsnap", root, classes, targets, LAYOUT, split)
    dataset = FileImageDataset(paths, targets, classes, name="birdsnap", root=root, split=split)
    dataset.num_missing = missing
    return dataset


register_dataset("birdsnap", build_birdsnap, LAYOUT, ("train", "test"),
                 "Birdsnap v1.1, 500 species, 2,443 test images; train = the rest of images.txt that is downloaded")
