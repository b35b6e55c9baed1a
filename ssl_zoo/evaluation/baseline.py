"""The baseline a trained encoder is compared with: the encoder its own training run started from.

A gain is only the method's when both encoders share everything but training: the recipe's initialisation
(e.g. SimSiam recipes build ResNets with ``zero_init_last=True``, MoCo v2's with ``False``), the seed, and
BatchNorm running statistics that describe the images. A fresh BatchNorm has running mean 0 and variance 1,
which no real layer input has; a trained encoder's statistics have followed its training images. So the
untrained encoder is scored twice:

* ``untrained_encoder(recipe, seed)``: exactly the weights training starts from at step 0 (the same
  ``set_seed(seed)`` + ``create_method(recipe)`` path as ``ssl_zoo.train``), as the plain timm backbone an
  export holds, with its initial BatchNorm statistics;
* ``recompute_batchnorm_stats(encoder, training images)``: the same weights (no gradient, no weight change),
  BatchNorm running statistics recomputed in one pass over the recipe's training split
  (``torch.optim.swa_utils.update_bn``: train mode, ``momentum=None``, i.e. the cumulative average over
  batches). The images go through the recipe's ``"eval"`` view, the one every evaluation encodes them
  with, so the statistics describe the inputs the features are then computed on.

``untrained_scores`` runs a scoring function on both and returns the BatchNorm-recomputed numbers under
their own names and the initial-statistics ones with the ``_init_bn`` suffix.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .features import make_loader

if TYPE_CHECKING:
    from ..recipe import Recipe

INIT_BN_SUFFIX = "_init_bn"


def untrained_encoder(recipe: str | Recipe, seed: int = 0) -> nn.Module:
    """The encoder a training run of ``recipe`` with ``seed`` starts from, as a plain timm backbone.

    Built the way ``ssl_zoo.train`` builds the method before its first step (``set_seed(seed)`` then
    ``create_method(recipe)``: the recipe's ``model_args`` such as ``zero_init_last`` and its ``init``), then
    copied into the architecture an export loads into, so method-specific wrappers (MoCo's grouped BatchNorm)
    do not change how it is evaluated. BatchNorm statistics are the initial ones.
    """
    from accelerate.utils import set_seed

    from ..factory import create_backbone, create_method
    from ..recipe import get_recipe

    resolved = get_recipe(recipe) if isinstance(recipe, str) else recipe
    set_seed(seed)  # as train._build_method: identical initial weights
    method = create_method(resolved)
    # The weights are loaded below: no init (and no download of timm weights) for the empty copy.
    encoder = create_backbone(resolved, num_classes=0, apply_init=False)
    encoder.load_state_dict(method.encoder.state_dict(), strict=True)
    return encoder.eval()


def training_images(recipe: Recipe, data: str | None = None) -> Dataset:
    """The recipe's training split (the images pre-training reads) through the recipe's ``"eval"`` view."""
    from ..data import create_dataset
    from ..transforms import build_view_transform

    return create_dataset(recipe.dataset, root=data, split=recipe.train_split,
                          transform=build_view_transform("eval", recipe.augment))


def recompute_batchnorm_stats(encoder: nn.Module, images: Dataset | DataLoader, batch_size: int = 256,
                              num_workers: int = 0, seed: int = 0,
                              device: torch.device | str | None = None) -> nn.Module:
    """Replace every BatchNorm's running statistics by those of ``images``; weights stay as they are.

    One pass under ``no_grad`` in train mode with ``momentum=None`` (``torch.optim.swa_utils.update_bn``),
    so each layer's running mean is the mean of its per-batch input means and its running variance the
    mean of the per-batch (unbiased) variances. A dataset is read in shuffled batches (seeded by ``seed``), so
    every batch is a sample of the whole set. The encoder's train/eval mode is restored; returns ``encoder``.
    """
    loader = images if isinstance(images, DataLoader) else make_loader(
        images, batch_size=batch_size, num_workers=num_workers, shuffle=True, seed=seed)
    target = torch.device(device) if device is not None else None
    if target is not None:
        encoder.to(target)
    torch.optim.swa_utils.update_bn(loader, encoder, device=target)
    return encoder


def untrained_scores(recipe: str | Recipe, seed: int, score: Callable[[nn.Module], Mapping[str, Any]],
                     data: str | None = None, num_workers: int = 0) -> dict[str, Any]:
    """``score`` of the recipe's own untrained encoder: BatchNorm statistics recomputed on the training
    images (the keys ``score`` returns) and initial statistics (the same keys + ``"_init_bn"``)."""
    from ..recipe import get_recipe

    resolved = get_recipe(recipe) if isinstance(recipe, str) else recipe
    encoder = untrained_encoder(resolved, seed)
    init_stats = dict(score(encoder))
    recompute_batchnorm_stats(encoder, training_images(resolved, data), num_workers=num_workers, seed=seed)
    out = dict(score(encoder))
    out.update({f"{key}{INIT_BN_SUFFIX}": value for key, value in init_stats.items()})
    return out


__all__ = ["untrained_encoder", "training_images", "recompute_batchnorm_stats", "untrained_scores", "INIT_BN_SUFFIX"]
