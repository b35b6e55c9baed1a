"""One entry point per thing you build: ``create_model`` (an encoder), ``create_method`` (the SSL module)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from torch import nn

from . import backbones  # noqa: F401  (our timm architectures, e.g. resnet18_cifar)
from .methods import SSLMethod, get_method_class
from .recipe import Recipe, get_recipe


def _resolve(recipe: str | Recipe, overrides: dict[str, Any]) -> Recipe:
    base = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
    return base.with_overrides(**overrides)


def create_backbone(recipe: Recipe, num_classes: int = 0, apply_init: bool = True) -> nn.Module:
    """The recipe's timm backbone (``num_classes=0``: pooled features), optionally initialised."""
    try:
        model = timm.create_model(recipe.backbone.arch, pretrained=False, num_classes=num_classes,
                                  **dict(recipe.backbone.model_args))
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ValueError(f"Recipe {recipe.name!r} names backbone {recipe.backbone.arch!r}, which timm does "
                             f"not know. See timm.list_models().") from exc
        raise
    if apply_init and recipe.backbone.init:
        init_backbone_(model, recipe.backbone.init)
    cfg = recipe.pretrained_cfg()
    model.pretrained_cfg = cfg
    model.default_cfg = cfg
    return model


def init_backbone_(model: nn.Module, init: str) -> None:
    """Load supervised/other weights into a backbone before SSL training.

    ``init`` is ``"timm:<arch.tag>"`` (timm's pretrained weights, fetched through the Hub or its
    cache) or a path to a safetensors / PyTorch state dict. Classifier keys are ignored.
    """
    if init.startswith("timm:"):
        tag = init[len("timm:"):]
        try:
            source = timm.create_model(tag, pretrained=True, num_classes=0)
        except Exception as exc:  # network, offline cache miss, unknown tag: all end here
            raise RuntimeError(
                f"Could not fetch the initial encoder weights {init!r}: {type(exc).__name__}: {exc}. "
                f"Without internet, pre-populate the Hugging Face cache (HF_HUB_OFFLINE=1 then reads it), "
                f"pass a local file as init='path/to/weights.safetensors', or use init=None for random "
                f"initialisation.") from exc
        state = source.state_dict()
    else:
        path = Path(init)
        if not path.is_file():
            raise FileNotFoundError(f"Encoder init file {init!r} does not exist. Use 'timm:<arch.tag>' for timm "
                                    f"weights, a path to a .safetensors/.pth state dict, or None.")
        from .convert import load_upstream, state_dict_of  # safetensors, or a weights_only pickle

        state = state_dict_of(load_upstream(path))
    head = getattr(model, "default_cfg", {}).get("classifier", "fc")
    state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(f"{head}.")]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"Encoder init {init!r} does not match {type(model).__name__}: missing keys "
                           f"{missing[:10]}, unexpected keys {result.unexpected_keys[:10]}.")


def create_model(name: str | Recipe, pretrained: bool = False, num_classes: int = 0,
                 checkpoint: str | Path | None = None, **overrides: Any) -> nn.Module:
    """Create the encoder of a recipe: ``(B, 3, H, W) -> (B, model.num_features)``.

    ``pretrained=True`` loads the recipe's published weights (file > Hub > URL; a URL file is
    downloaded once, verified and converted: ``ssl_zoo.hub.resolve_weights``);
    ``checkpoint`` loads a local file or run/model directory instead. ``name`` may also be
    ``"hf-hub:org/repo[@revision]"`` for any repo in ssl_zoo/timm format.
    ``num_classes > 0`` adds a linear head: the recipe's official linear classifier when it has
    one with that many classes (``weights.classifier_url``, e.g. SimSiam's ImageNet probe with
    ``num_classes=1000``) and ``pretrained=True``, else a freshly initialised one.
    """
    if isinstance(name, str) and name.startswith("hf-hub:"):
        from .hub import create_model_from_hub
        return create_model_from_hub(name[len("hf-hub:"):], pretrained=pretrained, num_classes=num_classes,
                                     checkpoint=checkpoint, **overrides)
    recipe = _resolve(name, overrides)
    load = pretrained or checkpoint is not None
    model = create_backbone(recipe, num_classes=num_classes, apply_init=not load)
    if load:
        from .hub import load_pretrained
        load_pretrained(model, recipe, checkpoint=checkpoint)
    return model


def create_method(name: str | Recipe, **overrides: Any) -> SSLMethod:
    """Create the full self-supervised module of a recipe (encoder, heads, momentum copies, queues)."""
    recipe = _resolve(name, overrides)
    encoder = create_backbone(recipe, num_classes=0)
    cls = get_method_class(recipe.method)
    method = cls(encoder, image_size=recipe.image_size, **dict(recipe.method_args))
    method.recipe = recipe  # plain attribute: not a submodule, not in state_dict
    return method
