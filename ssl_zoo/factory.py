"""One entry point per thing you build: ``create_model`` (an encoder), ``create_method`` (the SSL module)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from .methods import SSLMethod, get_method_class
from .recipe import Recipe, get_recipe
from .weights import build_model, init_weights_, recipe_source, resolve_source


def _resolve(recipe: str | Recipe, overrides: dict[str, Any]) -> Recipe:
    base = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
    return base.with_overrides(**overrides)


def create_backbone(recipe: Recipe, num_classes: int = 0, apply_init: bool = True) -> nn.Module:
    """The recipe's timm backbone (``num_classes=0``: pooled features), optionally initialised."""
    source = recipe_source(recipe)
    return build_model(source if apply_init else dataclasses.replace(source, init=None), num_classes=num_classes)


def init_backbone_(model: nn.Module, init: str) -> None:
    """Load supervised/other weights into a backbone before SSL training (``ssl_zoo.weights.init_weights_``).

    ``init`` is ``"timm:<arch.tag>"`` (timm's pretrained weights, fetched through the Hub or its
    cache) or a path to a safetensors / PyTorch state dict. Classifier keys are ignored.
    """
    init_weights_(model, init)


def create_model(name: str | Recipe, pretrained: bool = False, num_classes: int = 0,
                 checkpoint: str | Path | None = None, **overrides: Any) -> nn.Module:
    """Create the encoder of a recipe: ``(B, 3, H, W) -> (B, model.num_features)``.

    ``pretrained=True`` loads the recipe's published weights (file > Hub > URL; a URL file is
    downloaded once, verified and converted: ``ssl_zoo.weights.resolve_weights``);
    ``checkpoint`` loads a local file or run/model directory instead. ``name`` may also be
    ``"hf-hub:org/repo[@revision]"`` for any repo in ssl_zoo/timm format, or ``"local-dir:FOLDER"``
    for an exported model / run folder (its weights; ``overrides`` then go to ``timm.create_model``).
    ``num_classes > 0`` adds a linear head: the recipe's official linear classifier when it has
    one with that many classes (``weights.classifier_url``, e.g. SimSiam's ImageNet probe with
    ``num_classes=1000``) and ``pretrained=True``, else a freshly initialised one.
    """
    source = resolve_source(name, pretrained=pretrained, checkpoint=checkpoint, overrides=overrides)
    return build_model(source, num_classes=num_classes)


def create_method(name: str | Recipe, **overrides: Any) -> SSLMethod:
    """Create the full self-supervised module of a recipe (encoder, heads, momentum copies, queues)."""
    recipe = _resolve(name, overrides)
    encoder = create_backbone(recipe, num_classes=0)
    # Every registered method takes (encoder, *, image_size, **method_args); the base class takes the encoder only.
    cls: Callable[..., SSLMethod] = get_method_class(recipe.method)
    method = cls(encoder, image_size=recipe.image_size, **dict(recipe.method_args))
    method.recipe = recipe  # plain attribute: not a submodule, not in state_dict
    return method
