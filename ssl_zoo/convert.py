"""Import upstream SSL checkpoints into ssl_zoo's format (``model.safetensors`` + ``config.json``).

One filter function per source maps the upstream key layout to timm's ResNet layout and drops
everything that is not the backbone (heads, momentum copies, queues), like timm's
``checkpoint_filter_fn``. The result must fill every backbone key of
``timm.create_model(arch, num_classes=0)`` exactly (only BatchNorm ``num_batches_tracked``
counters may be absent), with no key left over.

Sources:
- ``moco``: official MoCo v1/v2 (``state_dict`` with ``module.encoder_q.*``; ``fc`` is the head)
- ``simsiam``: official SimSiam (``module.encoder.*``; ``fc`` is the projector; ``module.predictor`` dropped)
- ``lightly``: Lightning checkpoints of lightly models (``backbone.*``, either named torchvision
  children or ``nn.Sequential(*resnet.children()[:-1])`` indices ``backbone.0`` ... ``backbone.7``)
- ``solo``: solo-learn Lightning checkpoints (``backbone.*`` with torchvision names)
- ``torchvision`` / ``timm``: plain ResNet state dicts (classifier dropped)

Checkpoints are read by ``ssl_zoo.state_dicts.read_checkpoint`` (legacy pickles only with
``torch.load(weights_only=True)``) and cut by its ``filter_state_dict``. This module sits below
``ssl_zoo.weights`` (which converts URL files with it) and imports nothing above it.
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .download import WeightsError, file_digests
from .errors import SslZooError, report_user_error
from .parsers.convert import configure_parser
from .state_dicts import classifier_names, filter_state_dict, read_checkpoint, state_dict_of

if TYPE_CHECKING:
    from .recipe import Recipe

StateDict = dict[str, torch.Tensor]


class ConversionError(SslZooError, ValueError):
    """The checkpoint does not match the chosen source layout or architecture."""


# -- filters: (upstream state dict, target timm model) -> timm backbone keys ----------

def _take_prefix(state: StateDict, prefixes: tuple[str, ...], drop: tuple[str, ...] = ("fc",)) -> StateDict:
    """Keys under the first prefix present, with the prefix removed and head keys dropped."""
    sub = filter_state_dict(state, prefixes=prefixes, drop=drop)
    if sub:
        return sub
    seen = sorted({k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("module.") else "") for k in state})
    raise ConversionError(f"No keys under {' or '.join(repr(p) for p in prefixes)} in this checkpoint (its top-level "
                          f"key groups: {', '.join(seen[:12])}). Is --source right?")


def filter_moco(state: StateDict, model: nn.Module) -> StateDict:
    """Official MoCo v1/v2: the query encoder; ``fc`` (linear or MLP head), ``encoder_k`` and queue dropped."""
    return _take_prefix(state, ("module.encoder_q.", "encoder_q."))


def filter_simsiam(state: StateDict, model: nn.Module) -> StateDict:
    """Official SimSiam: the encoder; its ``fc`` (the projector) and the predictor dropped."""
    return _take_prefix(state, ("module.encoder.", "encoder."))


def filter_lightning_backbone(state: StateDict, model: nn.Module) -> StateDict:
    """lightly / solo-learn: ``backbone.*``; ``backbone.<i>.`` (an ``nn.Sequential`` of the ResNet's
    children) is renamed to the i-th child of the timm model (same order as torchvision's)."""
    sub = _take_prefix(state, ("backbone.", "model.backbone."))
    children = [name for name, _ in model.named_children()]
    out = {}
    for key, value in sub.items():
        match = re.match(r"^(\d+)\.(.*)$", key)
        if match:
            index = int(match.group(1))
            if index >= len(children):
                raise ConversionError(f"Key backbone.{key} indexes child {index}, but {type(model).__name__} has "
                                      f"{len(children)} children. Is --arch right?")
            key = f"{children[index]}.{match.group(2)}"
        out[key] = value
    return filter_state_dict(out, drop=("fc",))


def filter_classifier(state: StateDict, model: nn.Module) -> StateDict:
    """torchvision / timm ResNet state dicts: the classifier (``fc``, or the arch's ``classifier``) dropped."""
    return filter_state_dict(state, drop=classifier_names(model))


FILTERS: dict[str, Callable[[StateDict, nn.Module], StateDict]] = {
    "moco": filter_moco,
    "simsiam": filter_simsiam,
    "lightly": filter_lightning_backbone,
    "solo": filter_lightning_backbone,
    "torchvision": filter_classifier,
    "timm": filter_classifier,
}
# Methods whose paper the model card cites when no recipe is given (MoCo v1 and v2 share a layout).
SOURCE_METHODS: dict[str, str] = {"simsiam": "simsiam"}


def check_complete(state: StateDict, model: nn.Module) -> StateDict:
    """Every backbone key filled with the right shape, nothing left over; returns the full state.
    Missing BatchNorm ``num_batches_tracked`` counters (not weights) are taken from the model."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def show(keys: list[str]) -> str:
            return (", ".join(keys[:8]) + (f", ... ({len(keys)})" if len(keys) > 8 else "")) if keys else "none"
        arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", type(model).__name__)
        raise ConversionError(f"The filtered checkpoint does not fill {arch} exactly: missing {show(missing)}; "
                              f"unexpected {show(unexpected)}; shape mismatches {show(shapes)}. Check --arch "
                              f"(and --source).")
    return {k: (state[k] if k in state else own[k]) for k in own}


def split_linear_classifier(state: StateDict, model: nn.Module) -> tuple[StateDict, StateDict]:
    """Official linear-probe checkpoints (MoCo's and SimSiam's ``main_lincls.py``): a DDP-wrapped
    torchvision ResNet, ``module.<key>``, whose ``fc`` is the linear classifier. Returns the
    backbone (timm keys, checked like any import) and the classifier (``weight``, ``bias``)."""
    sub = filter_state_dict(state, prefixes=("module.",)) or dict(state)
    head = filter_state_dict(sub, prefixes=("fc.",))
    if set(head) != {"weight", "bias"}:
        raise ConversionError(f"No linear classifier (module.fc.weight and module.fc.bias) in this checkpoint; "
                              f"its fc keys are {sorted(head) or 'none'}. Is it a main_lincls.py checkpoint?")
    backbone = check_complete(filter_state_dict(sub, drop=("fc",)), model)
    return backbone, head


# -- the conversion ---------------------------------------------------------------

def convert_checkpoint(src: str | Path, source: str, out_dir: str | Path, arch: str | None = None,
                       recipe: str | Recipe | None = None, method: str | None = None,
                       model_args: Mapping[str, Any] | None = None) -> Path:
    """Convert an upstream checkpoint into an ssl_zoo model folder; returns the folder.

    The architecture comes from ``recipe`` (a registered name or a ``Recipe``: its backbone),
    ``arch``, the checkpoint's own ``arch`` entry (official MoCo / SimSiam) or defaults to ``resnet50``.
    """
    import timm

    from .export import save_encoder
    from .recipe import Recipe, get_recipe

    if source not in FILTERS:
        raise ValueError(f"Unknown source {source!r}; choose one of {', '.join(FILTERS)}.")
    try:
        checkpoint = read_checkpoint(src)  # the one reader: safetensors, or a weights_only pickle
    except WeightsError as exc:
        raise ConversionError(str(exc)) from None
    rec = None
    if recipe is not None:
        rec = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
        if arch is not None and arch != rec.backbone.arch:
            raise ValueError(f"--arch {arch} contradicts recipe {rec.name!r}, whose backbone is {rec.backbone.arch}.")
        arch, model_args = rec.backbone.arch, dict(rec.backbone.model_args) if model_args is None else model_args
    stored_arch = checkpoint.get("arch") if isinstance(checkpoint.get("arch"), str) else None
    arch = arch or stored_arch or "resnet50"
    model = timm.create_model(arch, pretrained=False, num_classes=0, **dict(model_args or {}))
    state = check_complete(FILTERS[source](state_dict_of(checkpoint), model), model)
    model.load_state_dict(state, strict=True)
    if rec is None:
        model.pretrained_cfg = _imported_pretrained_cfg(model, arch, source)
    digests = file_digests(src)
    extra: dict[str, Any] = {"imported": {"source": source, "file": Path(src).name, "sha256": digests["sha256"],
                                          "md5": digests["md5"], "arch": arch, "epoch": checkpoint.get("epoch")
                                          if isinstance(checkpoint.get("epoch"), int) else None}}
    method = method or (rec.method if rec is not None else SOURCE_METHODS.get(source))
    if method and rec is None:
        extra["method"] = method
    return save_encoder(model, out_dir, recipe=rec, extra=extra, architecture=arch,
                        model_args=dict(model_args or {}))


def _imported_pretrained_cfg(model: nn.Module, arch: str, source: str) -> dict[str, Any]:
    """Preprocessing of the upstream release; the other timm fields describe timm's own weights, not these."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    keep = {k: cfg[k] for k in ("input_size", "crop_pct", "mean", "std", "first_conv", "classifier", "pool_size",
                                "interpolation") if k in cfg}
    if source != "timm":
        keep["interpolation"] = "bilinear"  # torchvision-style evaluation (Resize + CenterCrop) upstream
        keep["input_size"], keep["crop_pct"] = (3, 224, 224), 0.875
    return {**keep, "architecture": arch, "tag": f"imported-{source}"}


# -- CLI ------------------------------------------------------------------------

def run_cli(args: argparse.Namespace) -> int:
    try:
        out = convert_checkpoint(args.src, args.source, args.out, arch=args.arch, recipe=args.recipe,
                                 method=args.method, model_args=args.model_args)
    except (ConversionError, ValueError, FileNotFoundError, KeyError) as exc:
        return report_user_error(exc, prefix="ssl-zoo convert: ")
    from .export import read_encoder_config

    cfg = read_encoder_config(out)
    print(f"Wrote {out}/model.safetensors ({cfg['architecture']}, {cfg['num_features']}-d features) and config.json.")
    print(f"Load it with timm.create_model('local-dir:{out}', pretrained=True) (weights and preprocessing from "
          f"config.json), or with ssl_zoo.create_model('hf-hub:ORG/NAME', pretrained=True) after "
          f"`ssl-zoo push {out} --repo ORG/NAME`.")
    return 0


__all__ = ["ConversionError", "FILTERS", "state_dict_of", "filter_moco", "filter_simsiam",
           "filter_lightning_backbone", "filter_classifier", "check_complete", "split_linear_classifier",
           "convert_checkpoint",
           "configure_parser", "run_cli"]
