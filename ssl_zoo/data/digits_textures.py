"""``digits_textures``: an embedded CPU benchmark where self-supervised methods can differ (issue 14, item 8).

On the plain embedded digits an untrained encoder already reaches ~91% k-NN, so no method ordering means
anything there. This dataset is defined once, here, and frozen before any method is run on it: each of
scikit-learn's 1,797 digit scans is composited at a random scale (18-40 px) and position onto a random
64x64 patch of a real photograph or texture shipped with scikit-image (``skimage.data``: astronaut,
brick, camera, cat, chelsea, coffee, coins, grass, gravel, moon, page, rocket, text), in a random colour.
Everything is drawn from one generator with seed 0, so every user gets the same 1,257 train / 540 test
images (the digits' stratified split). Needs scikit-image (``pip install scikit-image``); ``root`` is ignored.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .base import ArrayImageDataset, skimage_sample_images
from .registry import register_dataset

IMAGE_SIZE = 64
SEED = 0
BACKGROUNDS = ("astronaut", "brick", "camera", "cat", "chelsea", "coffee", "coins", "grass", "gravel", "moon",
               "page", "rocket", "text")
LAYOUT = "(none: generated from scikit-learn digits and scikit-image sample images, `root` is ignored)"


def _backgrounds() -> list[np.ndarray]:
    out = []
    for image in skimage_sample_images(BACKGROUNDS, "digits_textures"):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        out.append(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    return out


def _composite(*, size_range: tuple[int, int], resample: int, background_contrast: float, background_level: float,
               digit_colour: Callable[[np.random.Generator], np.ndarray]) -> tuple[np.ndarray, np.ndarray,
                                                                                     dict[str, np.ndarray]]:
    """Each digit scan pasted (as alpha) at a random scale and position on a random 64x64 background patch.

    The background is ``level * mean + contrast * (patch - mean)`` (per-channel mean of the patch), so
    ``(1, 1)`` keeps the photo as it is. One generator with seed 0 draws, per image and in this order: the
    photo, the patch corner, the digit size, the digit colour, the digit corner.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    from .digits import digits_arrays

    _, labels, splits = digits_arrays()
    scans = load_digits().images  # (1797, 8, 8), 0..16
    backgrounds = _backgrounds()
    rng = np.random.default_rng(SEED)
    images = np.empty((len(scans), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, scan in enumerate(scans):
        bg = backgrounds[rng.integers(len(backgrounds))]
        y0 = rng.integers(0, bg.shape[0] - IMAGE_SIZE + 1)
        x0 = rng.integers(0, bg.shape[1] - IMAGE_SIZE + 1)
        canvas = bg[y0:y0 + IMAGE_SIZE, x0:x0 + IMAGE_SIZE].astype(np.float32)
        if (background_contrast, background_level) != (1.0, 1.0):
            mean = canvas.mean(axis=(0, 1))
            canvas = background_level * mean + background_contrast * (canvas - mean)
        size = int(rng.integers(size_range[0], size_range[1] + 1))
        alpha = np.asarray(Image.fromarray((scan * (255 / 16)).astype(np.uint8)).resize((size, size), resample))
        alpha = alpha.astype(np.float32)[..., None] / 255.0
        colour = digit_colour(rng)
        top, left = rng.integers(0, IMAGE_SIZE - size + 1, size=2)
        patch = canvas[top:top + size, left:left + size]
        canvas[top:top + size, left:left + size] = (1 - alpha) * patch + alpha * colour
        images[i] = canvas.round().clip(0, 255).astype(np.uint8)
    return images, labels, splits


@lru_cache(maxsize=1)
def digits_textures_arrays() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(images (1797, 64, 64, 3) uint8, labels, {"train": idx, "test": idx})``, generated once per process."""
    from PIL import Image

    return _composite(size_range=(18, 40), resample=Image.BILINEAR, background_contrast=1.0, background_level=1.0,
                      digit_colour=lambda rng: rng.integers(0, 256, size=3).astype(np.float32))


@lru_cache(maxsize=1)
def digits_clutter_arrays() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``digits_clutter``: light-grey digits, 24-48 px at any position, on photo patches dimmed to 35% of their
    mean colour with 30% of their contrast. Same shapes and splits as :func:`digits_textures_arrays`."""
    from PIL import Image

    return _composite(size_range=(24, 48), resample=Image.BICUBIC, background_contrast=0.3, background_level=0.35,
                      digit_colour=lambda rng: np.full(3, rng.uniform(200, 255), dtype=np.float32))


def _builder(name: str, arrays: Callable[[], tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]):
    def build(root: Path | None, split: str, **kwargs: Any) -> ArrayImageDataset:
        if kwargs:
            raise TypeError(f"{name} takes no extra arguments, got {sorted(kwargs)}")
        images, labels, splits = arrays()
        idx = splits[split]
        return ArrayImageDataset(images[idx], labels[idx], [str(d) for d in range(10)], name=name, root=None,
                                 split=split)
    return build


build_digits_textures = _builder("digits_textures", digits_textures_arrays)
build_digits_clutter = _builder("digits_clutter", digits_clutter_arrays)
register_dataset("digits_textures", build_digits_textures, LAYOUT, ("train", "test"),
                 "digits composited on photo/texture patches at random scale and position, 64 px; "
                 "1,257 train / 540 test (frozen, seed 0)",
                 reads_folder=False)
register_dataset("digits_clutter", build_digits_clutter, LAYOUT, ("train", "test"),
                 "light-grey digits at random scale (24-48 px) and position on dimmed, low-contrast photo "
                 "patches, 64 px; 1,257 train / 540 test (frozen, seed 0)",
                 reads_folder=False)
