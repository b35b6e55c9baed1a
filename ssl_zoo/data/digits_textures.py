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

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .base import ArrayImageDataset
from .registry import register_dataset

IMAGE_SIZE = 64
SEED = 0
BACKGROUNDS = ("astronaut", "brick", "camera", "cat", "chelsea", "coffee", "coins", "grass", "gravel", "moon",
               "page", "rocket", "text")
LAYOUT = "(none: generated from scikit-learn digits and scikit-image sample images, `root` is ignored)"


def _backgrounds() -> list[np.ndarray]:
    try:
        import skimage.data
    except ImportError as exc:  # an optional dependency: say how to get it
        from ..errors import UserInputError
        raise UserInputError("The digits_textures dataset needs scikit-image: pip install scikit-image.") from exc
    out = []
    for name in BACKGROUNDS:
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        out.append(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    return out


@lru_cache(maxsize=1)
def digits_textures_arrays() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(images (1797, 64, 64, 3) uint8, labels, {"train": idx, "test": idx})``, generated once per process."""
    from PIL import Image

    from .digits import digits_arrays

    _, labels, splits = digits_arrays()
    from sklearn.datasets import load_digits

    scans = load_digits().images  # (1797, 8, 8), 0..16
    backgrounds = _backgrounds()
    rng = np.random.default_rng(SEED)
    images = np.empty((len(scans), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, scan in enumerate(scans):
        bg = backgrounds[rng.integers(len(backgrounds))]
        y0 = rng.integers(0, bg.shape[0] - IMAGE_SIZE + 1)
        x0 = rng.integers(0, bg.shape[1] - IMAGE_SIZE + 1)
        canvas = bg[y0:y0 + IMAGE_SIZE, x0:x0 + IMAGE_SIZE].astype(np.float32)
        size = int(rng.integers(18, 41))
        alpha = np.asarray(Image.fromarray((scan * (255 / 16)).astype(np.uint8)).resize((size, size),
                                                                                         Image.BILINEAR))
        alpha = alpha.astype(np.float32)[..., None] / 255.0
        colour = rng.integers(0, 256, size=3).astype(np.float32)
        top, left = rng.integers(0, IMAGE_SIZE - size + 1, size=2)
        patch = canvas[top:top + size, left:left + size]
        canvas[top:top + size, left:left + size] = (1 - alpha) * patch + alpha * colour
        images[i] = canvas.round().clip(0, 255).astype(np.uint8)
    return images, labels, splits


def build_digits_textures(root: Path | None, split: str, **kwargs: Any) -> ArrayImageDataset:
    if kwargs:
        raise TypeError(f"digits_textures takes no extra arguments, got {sorted(kwargs)}")
    images, labels, splits = digits_textures_arrays()
    idx = splits[split]
    return ArrayImageDataset(images[idx], labels[idx], [str(d) for d in range(10)], name="digits_textures",
                             root=None, split=split)


register_dataset("digits_textures", build_digits_textures, LAYOUT, ("train", "test"),
                 "digits composited on photo/texture patches at random scale and position, 64 px; "
                 "1,257 train / 540 test (frozen, seed 0)")
