"""The online monitor of ``ssl-zoo train --knn-every N``: k-NN top-1 and feature collapse during training."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..errors import UserInputError, one_line
from ..recipe import Recipe
from .features import extract_features
from .metrics import knn_accuracy

KNN_HOLDOUT = 0.2  # the share of a class tree without a test split that --knn-every queries


def online_knn_datasets(recipe: Recipe, data: str | None, seed: int = 0,
                        log: Callable[[str], Any] = print) -> tuple[Dataset, Dataset] | None:
    """The labelled (bank, queries) pair for --knn-every, eval view: the recipe dataset's train and test splits;
    for a class tree without a test split, a seeded class-stratified 20% of it (queries) and the rest (bank).
    None, said once through ``log``, when the data has no labels (an unlabelled folder): the monitor is off."""
    from ..data import create_dataset, get_dataset_info
    from ..data.base import stratified_split
    from ..transforms import build_view_transform

    if recipe.dataset == "unlabelled_images":
        log(f"--knn-every: {data} holds no labels (an unlabelled folder), so the k-NN and collapse monitor is "
            f"off; a class-per-folder tree (<class>/*.jpg, >= 2 classes) turns it on.")
        return None
    transform = build_view_transform("eval", recipe.augment)
    try:
        if recipe.dataset == "imagefolder" and not (data is not None and _has_test_folder(data)):
            full = create_dataset("imagefolder", root=data, split="train", transform=transform)
            bank, queries = stratified_split(full.targets, KNN_HOLDOUT, seed=seed)
            log(f"--knn-every: k-NN queries are a seeded, class-stratified {KNN_HOLDOUT:.0%} of the class tree "
                f"({len(queries)} images, seed {seed}), the bank the other {len(bank)}; training uses all images "
                f"(without labels).")
            return full.subset(bank), full.subset(queries)
        splits = get_dataset_info(recipe.dataset).splits
        return tuple(create_dataset(recipe.dataset, root=data, split=split, transform=transform)  # type: ignore
                     for split in ("train", "test" if "test" in splits else "val"))
    except (ValueError, FileNotFoundError) as exc:
        raise UserInputError(f"--knn-every needs labelled 'train' and 'test' splits of {recipe.dataset!r}: "
                             f"{one_line(exc)}") from None


def _has_test_folder(data: str) -> bool:
    from pathlib import Path

    return any((Path(data) / name).is_dir() for name in ("test", "val"))


def online_knn(encoder: nn.Module, sets: tuple[Dataset, Dataset], accelerator: Any,
               log: Callable[[str], Any]) -> dict[str, float]:
    """k-NN top-1 (k = 20, T = 0.07, as benchmarks/knn.py) of the current encoder, and the collapse monitor:
    the mean per-dimension std of the l2-normalised test features (about 1/sqrt(d) when healthy, SimSiam
    Fig. 2; warned about below a tenth of that)."""
    bank, queries = sets
    bank_x, bank_y = extract_features(encoder, bank, batch_size=256, accelerator=accelerator)
    test_x, test_y = extract_features(encoder, queries, batch_size=256, accelerator=accelerator)
    top1 = 100 * knn_accuracy(bank_x, bank_y, test_x, test_y, k=min(20, len(bank_x)), temperature=0.07,
                              num_classes=int(max(bank_y.max(), test_y.max())) + 1)
    std = float(F.normalize(test_x, dim=1).std(dim=0).mean())
    healthy = 1.0 / math.sqrt(test_x.shape[1])
    if std < 0.1 * healthy:
        log(f"warning: the features are collapsing: per-dimension std {std:.2e} of normalised features, "
            f"healthy is about {healthy:.2e} (1/sqrt(d)). Lower the lr or check the method's settings.")
    return {"knn_top1": top1, "feature_std": std}
