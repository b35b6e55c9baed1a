"""The dataset splits an evaluation protocol reads (``--train-split`` / ``--test-split`` / ``--holdout``) and
their description in the result record; shared by ``evaluation.cli`` and ``evaluation.finetune_cli``."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def eval_split(args: argparse.Namespace, split: str, transform: Callable, label_fraction: float = 1.0):
    """A split of the dataset; with ``--holdout F`` the train split's seeded stratified parts instead:
    ``--test-split`` names the held-out share F, ``--train-split`` the rest."""
    from ..data import create_dataset
    from ..data.base import label_fraction_indices, stratified_split

    on_error = getattr(args, "on_error", "raise")
    holdout = getattr(args, "holdout", None)
    if not holdout:
        return create_dataset(args.dataset, args.data, split=split, transform=transform,
                              label_fraction=label_fraction, seed=args.seed, on_error=on_error)
    full = create_dataset(args.dataset, args.data, split="train", transform=transform, on_error=on_error)
    keep, held = stratified_split(full.targets, holdout, seed=args.seed)
    part = full.subset(held if split == args.test_split else keep)
    if label_fraction < 1.0:
        part = part.subset(label_fraction_indices(part.targets, label_fraction, args.seed))
    return part


def num_classes_of(dataset: Any) -> int | None:
    classes = getattr(dataset, "classes", None)
    return len(classes) if classes is not None else None


def split_info(train_split: str, num_train: int, test_split: str, num_test: int, train: Any,
               num_classes: int | None = None, holdout: float | None = None, seed: int = 0) -> dict[str, Any]:
    info = {"train_split": train_split, "num_train": num_train, "test_split": test_split, "num_test": num_test,
            "num_classes": num_classes if num_classes is not None else num_classes_of(train)}
    if holdout:
        info["holdout"] = {"fraction": holdout, "seed": seed, "from_split": "train", "stratified": True}
    return info


__all__ = ["eval_split", "num_classes_of", "split_info"]
