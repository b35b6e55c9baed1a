"""Exported encoders: ``model.safetensors`` (timm key layout) + ``config.json`` (a superset of timm's)."""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from .errors import SslZooError, UserInputError
from .recipe import Recipe

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; published weights and configs should be readable like any file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class NonFiniteWeightsError(SslZooError, ValueError):
    """Parameters or buffers hold NaN/inf: the model diverged, and such weights are never exported or pushed."""

    exit_code = 1  # the run diverged or a peer stalled: not a wrong argument (docs/troubleshooting.md)


def non_finite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``state`` that hold NaN or inf (e.g. a BN ``running_var``)."""
    return [name for name, value in state.items()
            if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex())
            and not bool(torch.isfinite(value).all())]


def describe_non_finite(names: list[str], limit: int = 4) -> str:
    """``"3 tensors (a, b, c)"``: a short, one-line list for error messages."""
    shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
    return f"{len(names)} tensor{'s' if len(names) != 1 else ''} ({shown})"


def encoder_state_dict(encoder: nn.Module) -> dict:
    """Contiguous CPU tensors without shared storage, as safetensors requires."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in encoder.state_dict().items()}


def save_encoder(encoder: nn.Module, out_dir: str | os.PathLike, recipe: Recipe | None = None,
                 metrics: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None,
                 architecture: str | None = None, model_args: Mapping[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` for an encoder into ``out_dir``; returns the folder.

    Keys load strictly into ``timm.create_model(config["architecture"], num_classes=0, **config["model_args"])``.
    Raises :class:`NonFiniteWeightsError` (nothing written) when a parameter or buffer holds NaN/inf.
    """
    from . import __version__

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if recipe is not None:
        architecture = architecture or recipe.backbone.arch
        model_args = dict(recipe.backbone.model_args) if model_args is None else dict(model_args)
        pretrained_cfg = recipe.pretrained_cfg()
    else:
        if architecture is None:
            raise ValueError("save_encoder needs a recipe or an explicit architecture name.")
        pretrained_cfg = dict(getattr(encoder, "pretrained_cfg", {}) or {})
        pretrained_cfg["architecture"] = architecture
    pretrained_cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in pretrained_cfg.items()
                      if k not in ("hf_hub_id", "file", "url")}  # the location is where it is now
    pretrained_cfg["num_classes"] = 0
    pretrained_cfg = timm_pretrained_cfg(pretrained_cfg, architecture, encoder)
    ssl_info: dict[str, Any] = {"version": __version__, "metrics": dict(metrics or {})}
    if recipe is not None:
        ssl_info.update(recipe=recipe.name, method=recipe.method, dataset=recipe.dataset,
                        epochs=recipe.train.epochs, recipe_config=recipe.to_dict())
    ssl_info.update(dict(extra or {}))
    config = {
        "architecture": architecture,
        "num_classes": 0,
        "num_features": int(getattr(encoder, "num_features", 0)),
        "model_args": dict(model_args or {}),
        "pretrained_cfg": pretrained_cfg,
        "ssl_zoo": ssl_info,
    }
    state = encoder_state_dict(encoder)
    bad = non_finite_tensors(state)
    if bad:
        raise NonFiniteWeightsError(f"Refusing to export to {out}: {describe_non_finite(bad)} hold NaN/inf, so the "
                                    f"model diverged. Export an earlier checkpoint or retrain with a lower "
                                    f"learning rate.")
    atomic_write_bytes(out / WEIGHTS_NAME, safetensors_bytes(state, metadata={"format": "pt"}))
    atomic_write_bytes(out / CONFIG_NAME, (json.dumps(config, indent=2, sort_keys=False) + "\n").encode())
    return out


def timm_pretrained_cfg(cfg: Mapping[str, Any], architecture: str, model: nn.Module | None = None) -> dict[str, Any]:
    """Keep only fields timm's ``PretrainedCfg`` accepts (``timm.create_model("hf-hub:...")`` rejects
    others), rename ``paper`` to ``paper_ids`` and add the architecture's ``classifier`` / ``first_conv``
    so timm can swap the head (``num_classes=N``). ``pool_size`` (the final feature map) is timm's
    default only at timm's default input size; at another size it is computed from ``model``'s
    output stride (``feature_info``), or left out when that is unknown."""
    import dataclasses

    from timm.models import get_pretrained_cfg
    from timm.models._pretrained import PretrainedCfg

    fields = {f.name for f in dataclasses.fields(PretrainedCfg)}
    out = dict(cfg)
    if out.get("paper") and not out.get("paper_ids"):
        out["paper_ids"] = out["paper"]
    try:
        default = get_pretrained_cfg(architecture)
    except Exception:  # an architecture without a default cfg: nothing to add
        default = None
    for key in ("classifier", "first_conv"):
        value = getattr(default, key, None) if default is not None else None
        if value is not None and out.get(key) is None:
            out[key] = list(value) if isinstance(value, tuple) else value
    if out.get("pool_size") is None:
        pool = _pool_size(out.get("input_size"), default, model)
        if pool is not None:
            out["pool_size"] = pool
    return {k: v for k, v in out.items() if k in fields and v is not None}


def _pool_size(input_size: Any, default: Any, model: nn.Module | None) -> list[int] | None:
    """The final feature map's size for ``input_size`` (C, H, W)."""
    default_size = getattr(default, "input_size", None)
    if input_size is None or (default_size is not None and tuple(input_size) == tuple(default_size)):
        pool = getattr(default, "pool_size", None)
        return list(pool) if pool is not None else None
    info = getattr(model, "feature_info", None)
    reduction = info[-1].get("reduction") if isinstance(info, list) and info and isinstance(info[-1], dict) else None
    if not reduction:
        return None
    return [math.ceil(int(input_size[1]) / reduction), math.ceil(int(input_size[2]) / reduction)]


def read_encoder_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of an exported encoder folder (or the file itself)."""
    p = Path(path)
    p = p / CONFIG_NAME if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(f"No {CONFIG_NAME} at {p}: an exported ssl_zoo/timm model folder holds "
                                f"{WEIGHTS_NAME} and {CONFIG_NAME}.")
    try:
        with open(p) as fh:
            config = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{p} is not valid JSON ({exc}): an ssl_zoo/timm {CONFIG_NAME} is a JSON object with "
                             f"'architecture' and 'pretrained_cfg'. Export the model again.") from None
    if not isinstance(config, dict) or "architecture" not in config:
        raise UserInputError(f"{p} has no 'architecture': it is not an ssl_zoo/timm {CONFIG_NAME}. Export the "
                             f"model again.")
    return config


__all__ = ["save_encoder", "read_encoder_config", "timm_pretrained_cfg", "atomic_write_bytes", "WEIGHTS_NAME",
           "CONFIG_NAME",
           "NonFiniteWeightsError", "non_finite_tensors", "describe_non_finite"]
