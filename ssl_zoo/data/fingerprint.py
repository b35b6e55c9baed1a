"""What data a number was measured on (or a run trained on): a short fingerprint of a dataset.

``dataset_fingerprint(name, root)``:
- a folder (``root`` given): sha256 over the sorted ``(relative path, size, mtime_ns)`` of every file under
  ``root``: adding, removing, renaming, resizing or rewriting an image changes it; reading the files does not
  (no image is opened, so it costs one directory walk);
- an embedded dataset (``root`` None: digits, digits_textures, photo_patches, ...): sha256 of its arrays, split by
  split (name, images' shape, dtype and bytes, then the labels), as ``create_dataset`` builds them.
Returned as ``"sha256:<hex>"``.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import UserInputError


def folder_fingerprint(root: str | os.PathLike) -> str:
    """sha256 over the sorted ``(relative path, size, mtime_ns)`` of the files under ``root``."""
    base = Path(root)
    if not base.is_dir():
        raise UserInputError(f"Dataset folder {base} does not exist (or is not a folder).")
    entries = []
    for folder, _dirs, files in os.walk(base, followlinks=True):
        for name in files:
            path = Path(folder) / name
            st = path.stat()
            entries.append((path.relative_to(base).as_posix(), st.st_size, st.st_mtime_ns))
    digest = hashlib.sha256()
    for rel, size, mtime in sorted(entries):
        digest.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return "sha256:" + digest.hexdigest()


def embedded_fingerprint(name: str) -> str:
    """sha256 of an embedded dataset's arrays (every registered split)."""
    from . import create_dataset, get_dataset_info

    digest = hashlib.sha256()
    for split in get_dataset_info(name).splits:
        dataset = create_dataset(name, None, split=split)
        images = getattr(dataset, "images", None)
        if not isinstance(images, np.ndarray):
            raise UserInputError(f"Dataset {name!r} is read from a folder: pass its root to fingerprint it.")
        images = np.ascontiguousarray(images)
        digest.update(f"{split}\0{images.shape}\0{images.dtype}\0".encode())
        digest.update(images.tobytes())
        digest.update(np.asarray(dataset.targets, dtype=np.int64).tobytes())
    return "sha256:" + digest.hexdigest()


def dataset_fingerprint(name: str, root: str | None) -> str:
    """The fingerprint of dataset ``name`` read from ``root`` (a folder), or of the embedded ``name``."""
    return folder_fingerprint(root) if root is not None else embedded_fingerprint(name)


__all__ = ["dataset_fingerprint", "folder_fingerprint", "embedded_fingerprint"]
