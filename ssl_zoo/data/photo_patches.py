"""``photo_patches``: the embedded CPU benchmark where self-supervised methods can differ (issue 14, item 8).

Ten classes, one per real photograph shipped with scikit-image (``skimage.data``, listed in ``PHOTOS``), turned
grey so that a colour histogram cannot name the photo. Each image is a square patch of its photo, 16-48 px on a
side at a random position, resized (bilinear) to 32x32: the task is to tell which scene or texture a small
patch comes from. Train patches are cut from the left 65% of each photo's columns and test patches from the
right 35%, so no test pixel was ever seen in training. One generator with seed 0 draws, per image and in this
order, the side, the top row and the left column; image ``i`` of a split belongs to class ``i % 10``, so both
splits are balanced (1,260 train / 540 test).

Why this design (docs/results.md, "photo_patches"): MoCo v2's untrained ResNet-18 scores k-NN@20 ~39% here
with its initial BatchNorm statistics (~43% with them recomputed on the training images) while MoCo v2's digits
recipe lifts it to ~51% within its 30-epoch CPU budget; the three digit composites tried before
(``digits_textures``, ``digits_clutter`` and scratch variants) each gave MoCo v2 an instance cue unrelated to the
label (background, colour, position) that it learned instead of the digit. Defined by seed-0 MoCo v2 pilots,
then frozen; the reported comparison uses seeds 1-3. Needs scikit-image; ``root`` is ignored.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .base import ArrayImageDataset, skimage_sample_images
from .registry import register_dataset

PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "moon", "rocket")
IMAGE_SIZE = 32
PATCH_SIDES = (16, 48)  # inclusive range of the square patch's side in the photo, in pixels
SEED = 0
# (split, number of images, fraction of the photo's columns the patches come from)
SPLITS = (("train", 1260, (0.0, 0.65)), ("test", 540, (0.65, 1.0)))
LAYOUT = "(none: generated from scikit-image sample photographs, `root` is ignored)"


def _grey_photos() -> list[np.ndarray]:
    out = []
    for image in skimage_sample_images(PHOTOS, "photo_patches"):
        if image.ndim == 3:  # ITU-R 601 luma, truncated to uint8
            rgb = image[..., :3].astype(np.float64)
            image = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.uint8)
        out.append(image)
    return out


def patch_boxes(photo_shapes: Sequence[tuple[int, ...]] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Where every image comes from: ``(boxes (1800, 4) int64 of (label, top, left, side), {"train": idx,
    "test": idx})``, drawn from one generator with seed 0 (per image: side, top, left). ``photo_shapes``:
    the (height, width) of each photo in ``PHOTOS`` order, when the caller has them loaded already."""
    heights_widths = photo_shapes or [photo.shape for photo in _grey_photos()]
    rng = np.random.default_rng(SEED)
    boxes, splits = [], {}
    for split, count, (first, last) in SPLITS:
        start = len(boxes)
        for i in range(count):
            label = i % len(PHOTOS)
            height, width = heights_widths[label]
            col0, col1 = int(first * width), int(last * width)
            side = int(rng.integers(PATCH_SIDES[0], min(PATCH_SIDES[1], col1 - col0, height) + 1))
            top = int(rng.integers(0, height - side + 1))
            left = int(rng.integers(col0, col1 - side + 1))
            boxes.append((label, top, left, side))
        splits[split] = np.arange(start, len(boxes))
    return np.asarray(boxes, dtype=np.int64), splits


@lru_cache(maxsize=1)
def photo_patches_arrays() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(images (1800, 32, 32, 3) uint8, labels (1800,), {"train": idx, "test": idx})``, generated once per
    process: each box of :func:`patch_boxes` cut from its grey photo and resized (bilinear) to 32x32."""
    from PIL import Image

    photos = _grey_photos()
    boxes, splits = patch_boxes([photo.shape for photo in photos])
    grey = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(photos[label][top:top + side, left:left + side]))
                                .resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
                     for label, top, left, side in boxes.tolist()])
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=-1)), boxes[:, 0].copy(), splits


def build_photo_patches(root: Path | None, split: str, **kwargs: Any) -> ArrayImageDataset:
    if kwargs:
        raise TypeError(f"photo_patches takes no extra arguments, got {sorted(kwargs)}")
    images, labels, splits = photo_patches_arrays()
    idx = splits[split]
    return ArrayImageDataset(images[idx], labels[idx], list(PHOTOS), name="photo_patches", root=None, split=split)


register_dataset("photo_patches", build_photo_patches, LAYOUT, ("train", "test"),
                 "which of 10 scikit-image photos a grey 16-48 px patch (resized to 32 px) comes from; train "
                 "patches from each photo's left 65%, test from its right 35%; 1,260 train / 540 test (frozen, seed 0)",
                 reads_folder=False)
