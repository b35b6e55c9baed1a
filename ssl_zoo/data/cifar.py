"""``cifar10`` / ``cifar100``: the python-version archives, extracted, read by torchvision."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .base import ArrayImageDataset, require_base_folder, layout_error, require_dir, require_files
from .registry import register_dataset

LAYOUT_10 = """
root/                         (the cifar-10-batches-py folder itself, or its parent)
  cifar-10-batches-py/        (cifar-10-python.tar.gz, extracted)
    data_batch_1 ... data_batch_5, test_batch, batches.meta
"""
LAYOUT_100 = """
root/                         (the cifar-100-python folder itself, or its parent)
  cifar-100-python/           (cifar-100-python.tar.gz, extracted; fine labels, 100 classes)
    train, test, meta
"""


def _reader(tv_cls: type, verify: bool) -> type:
    """torchvision's CIFAR class, optionally without its MD5 checks (for copies re-pickled or trimmed)."""

    class Reader(tv_cls):  # type: ignore[misc, valid-type]
        def _check_integrity(self) -> bool:
            if verify:
                return super()._check_integrity()
            return all(os.path.isfile(os.path.join(self.root, self.base_folder, f))
                       for f, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            if verify:
                return super()._load_meta()
            with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return Reader


def _build(name: str, tv_name: str, base_name: str, layout: str, root: Path | None, split: str,
           verify_checksums: bool = True) -> ArrayImageDataset:
    import torchvision.datasets as tvd

    tv_cls = getattr(tvd, tv_name)
    root = require_dir(name, root, layout)
    base = require_base_folder(name, root, base_name, layout)
    files = [f for f, _ in tv_cls.train_list + tv_cls.test_list] + [tv_cls.meta["filename"]]
    require_files(name, root, [base / f for f in files], layout)
    try:
        tv = _reader(tv_cls, verify_checksums)(str(base.parent), train=(split == "train"), download=False)
    except RuntimeError as exc:
        raise layout_error(name, root, f"{exc}. The files exist, so their MD5 sums differ from the official "
                           "archive's; pass verify_checksums=False to read them anyway.", layout) from None
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
        raise layout_error(name, root, f"cannot parse the batch files: {exc!r}", layout) from None
    return ArrayImageDataset(np.ascontiguousarray(tv.data), tv.targets, tv.classes, name=name, root=root, split=split)


def build_cifar10(root: Path | None, split: str, **kwargs: Any) -> ArrayImageDataset:
    return _build("cifar10", "CIFAR10", "cifar-10-batches-py", LAYOUT_10, root, split, **kwargs)


def build_cifar100(root: Path | None, split: str, **kwargs: Any) -> ArrayImageDataset:
    return _build("cifar100", "CIFAR100", "cifar-100-python", LAYOUT_100, root, split, **kwargs)


register_dataset("cifar10", build_cifar10, LAYOUT_10, ("train", "test"), "CIFAR-10, 50,000 train / 10,000 test, 32 px")
register_dataset("cifar100", build_cifar100, LAYOUT_100, ("train", "test"),
                 "CIFAR-100 (fine labels), 50,000 train / 10,000 test, 32 px")
