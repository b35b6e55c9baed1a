"""A dataset's fingerprint: a short digest that changes when its images change, computed without decoding any.

- Images read from files (every folder layout): sha256 over the sorted list of ``(path relative to the root,
  size in bytes, mtime in ns)`` of the split's files. Replacing, adding, removing or renaming an image
  changes it; so does touching one (its mtime), which is the price of never reading the pixels.
- Images held in memory (the embedded ``digits`` and ``photo_patches``, CIFAR, STL-10): sha256 over the
  pixel array (shape, dtype, bytes) and the labels. The same arrays on any machine give the same digest.

Training records it in its checkpoint (``run.data_fingerprint``) and refuses to resume on other data;
evaluation records can store it beside the weights' digest.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import ArrayImageDataset, FileImageDataset

PREFIX = "sha256:"


def _files_digest(paths: list[str], root: Path | str | None) -> str:
    base = os.fspath(root) if root is not None else None
    entries = []
    for path in paths:
        st = os.stat(path)
        rel = os.path.relpath(path, base) if base is not None else os.path.abspath(path)
        entries.append((rel.replace(os.sep, "/"), st.st_size, st.st_mtime_ns))
    entries.sort()
    h = hashlib.sha256()
    for rel, size, mtime_ns in entries:
        h.update(json.dumps([rel, size, mtime_ns]).encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()


def _arrays_digest(images: np.ndarray, targets: list[int]) -> str:
    h = hashlib.sha256()
    h.update(f"{images.dtype.str}{tuple(images.shape)}".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.asarray(targets, dtype=np.int64).tobytes())
    return h.hexdigest()


def dataset_fingerprint(dataset_or_name: Any, root: str | os.PathLike | None = None, split: str = "train") -> str:
    """``"sha256:<hex>"`` of a dataset object, or of dataset ``name`` at ``root`` (its ``split``).

    Cheap: a folder's images are only ``stat``-ed, never decoded. Raises ``TypeError`` for a dataset that is
    neither file- nor array-backed (a caller's own ``torch`` Dataset): there is nothing to fingerprint."""
    dataset = dataset_or_name
    if isinstance(dataset_or_name, str):
        from .registry import create_dataset
        dataset = create_dataset(dataset_or_name, root=None if root is None else os.fspath(root), split=split)
    if isinstance(dataset, FileImageDataset):
        return PREFIX + _files_digest(dataset.paths, root if root is not None else dataset.root)
    if isinstance(dataset, ArrayImageDataset):
        return PREFIX + _arrays_digest(dataset.images, dataset.targets)
    raise TypeError(f"Cannot fingerprint a {type(dataset).__name__}: only file- and array-backed ssl_zoo datasets "
                    f"(create_dataset) have a fingerprint.")


def splits_fingerprint(name: str, root: str | os.PathLike | None, splits: Sequence[str]) -> str:
    """One ``"sha256:<hex>"`` for the splits of dataset ``name`` that a measurement read (an evaluation reads a
    train and a test split): the digest of each split's :func:`dataset_fingerprint`, in split-name order."""
    if len(set(splits)) == 1:
        return dataset_fingerprint(name, root, split=splits[0])
    h = hashlib.sha256()
    for split in sorted(set(splits)):
        h.update(f"{split}\0{dataset_fingerprint(name, root, split=split)}\n".encode())
    return PREFIX + h.hexdigest()


__all__ = ["dataset_fingerprint", "splits_fingerprint"]
