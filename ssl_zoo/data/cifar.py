"""``cifar10`` / ``cifar100``: the python-version archives, extracted, read by torchvision."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .base import ArrayImageDataset, layout_error, require_base_folder, require_dir, require_files
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


class _ArraysOnly(pickle.Unpickler):
    """An unpickler for the CIFAR python batches: dicts, lists, strings and numpy arrays, nothing else.

    The batches are pickles, and a pickle can name any callable; torchvision's reader uses plain
    ``pickle.load``. Only the numpy reconstruction functions the official files use are allowed, so a
    crafted file raises instead of running code, whether or not the MD5 sums are checked.
    """

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: CIFAR batches hold only arrays and lists")


def _load_batch(path: Path) -> dict:
    with open(path, "rb") as f:
        return _ArraysOnly(f, encoding="latin1").load()


def _build(name: str, tv_name: str, base_name: str, layout: str, root: Path | None, split: str,
           verify_checksums: bool = True) -> ArrayImageDataset:
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import check_integrity

    tv_cls = getattr(tvd, tv_name)  # only for its file list and the official MD5 sums
    root = require_dir(name, root, layout)
    base = require_base_folder(name, root, base_name, layout)
    files = [f for f, _ in tv_cls.train_list + tv_cls.test_list] + [tv_cls.meta["filename"]]
    require_files(name, root, [base / f for f in files], layout)
    wanted = tv_cls.train_list if split == "train" else tv_cls.test_list
    meta_md5 = tv_cls.meta["md5"]
    if verify_checksums:
        for filename, md5 in [*wanted, (tv_cls.meta["filename"], meta_md5)]:
            if not check_integrity(str(base / filename), md5):
                raise layout_error(name, root, f"{base / filename} has another MD5 sum than the official archive's; "
                                   "pass verify_checksums=False to read re-pickled or trimmed copies anyway.", layout)
    try:
        data, targets = [], []
        for filename, _ in wanted:
            batch = _load_batch(base / filename)
            data.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            targets.extend(int(t) for t in batch["labels" if "labels" in batch else "fine_labels"])
        classes = list(_load_batch(base / tv_cls.meta["filename"])[tv_cls.meta["key"]])
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as exc:
        raise layout_error(name, root, f"cannot parse the batch files: {exc}", layout) from None
    images = np.ascontiguousarray(np.concatenate(data).transpose(0, 2, 3, 1))  # N x 32 x 32 x 3, as torchvision
    return ArrayImageDataset(images, targets, classes, name=name, root=root, split=split)


def build_cifar10(root: Path | None, split: str, **kwargs: Any) -> ArrayImageDataset:
    return _build("cifar10", "CIFAR10", "cifar-10-batches-py", LAYOUT_10, root, split, **kwargs)


def build_cifar100(root: Path | None, split: str, **kwargs: Any) -> ArrayImageDataset:
    return _build("cifar100", "CIFAR100", "cifar-100-python", LAYOUT_100, root, split, **kwargs)


register_dataset("cifar10", build_cifar10, LAYOUT_10, ("train", "test"), "CIFAR-10, 50,000 train / 10,000 test, 32 px")
register_dataset("cifar100", build_cifar100, LAYOUT_100, ("train", "test"),
                 "CIFAR-100 (fine labels), 50,000 train / 10,000 test, 32 px")
