"""``digits``: the embedded default dataset, scikit-learn's 1,797 handwritten digit scans.

The 8x8 scans (values 0..16) are scaled to 0..255, upsampled bilinearly to 32x32 and repeated to
3 channels, so every 32 px recipe runs on them unchanged. The train/test split is a fixed
stratified 70/30 split (``train_test_split(test_size=0.3, stratify=y, random_state=0)``):
1,257 train and 540 test images. ``root`` is ignored.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .base import ArrayImageDataset
from .registry import register_dataset

IMAGE_SIZE = 32
TEST_SIZE = 0.3
SPLIT_SEED = 0
LAYOUT = "(none: embedded in scikit-learn, `root` is ignored)"


@lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(images (1797, 32, 32, 3) uint8, labels (1797,), {"train": idx, "test": idx})``, computed once."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) * (255.0 / 16.0))[:, None]
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    gray = x[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    images = np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=-1))
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=TEST_SIZE, stratify=labels,
                                           random_state=SPLIT_SEED)
    return images, labels, {"train": np.sort(train_idx), "test": np.sort(test_idx)}


def build_digits(root: Path | None, split: str, **kwargs: Any) -> ArrayImageDataset:
    if kwargs:
        raise TypeError(f"digits takes no extra arguments, got {sorted(kwargs)}")
    images, labels, splits = digits_arrays()
    idx = splits[split]
    return ArrayImageDataset(images[idx], labels[idx], [str(d) for d in range(10)], name="digits", root=None,
                             split=split)


register_dataset("digits", build_digits, LAYOUT, ("train", "test"),
                 "scikit-learn handwritten digits (1,797 real 8x8 scans) as 32 px RGB; 1,257 train / 540 test",
                 reads_folder=False)
