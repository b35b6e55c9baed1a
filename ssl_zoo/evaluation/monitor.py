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


def online_knn_datasets(recipe: Recipe, data: str | None) -> tuple[Dataset, Dataset]:
    """The labelled (bank, queries) pair for --knn-every: the recipe dataset's train and test splits, eval view."""
    from ..data import create_dataset
    from ..transforms import build_view_transform

    transform = build_view_transform("eval", recipe.augment)
    try:
        return tuple(create_dataset(recipe.dataset, root=data, split=split, transform=transform)  # type: ignore
                     for split in ("train", "test"))
    except (ValueError, FileNotFoundError) as exc:
        raise UserInputError(f"--knn-every needs labelled 'train' and 'test' splits of {recipe.dataset!r}: "
                             f"{one_line(exc)}") from None


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
