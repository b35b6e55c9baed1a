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


# -- the config.json schema -------------------------------------------------------------------------------

class ConfigError(UserInputError):
    """A config.json (of a folder or a Hub repo) with a key of the wrong type or one that is not allowed."""


# timm.create_model keyword arguments a config.json may carry in ``model_args``: architecture hyperparameters
# only. Nothing that names a file or URL (``checkpoint_path``, ``pretrained_cfg``, ``pretrained_cfg_overlay``,
# ``cache_dir``) and nothing that runs code. Each maps to the JSON kinds it accepts.
_NUMBER, _INT, _BOOL, _NAME, _INTS = "a number", "an integer", "true or false", "a name", "a list of integers"
ALLOWED_MODEL_ARGS: dict[str, tuple[str, ...]] = {
    **{k: (_NUMBER,) for k in ("drop_rate", "drop_path_rate", "drop_block_rate", "proj_drop_rate",
                                "attn_drop_rate", "pos_drop_rate", "patch_drop_rate", "mlp_ratio", "init_values",
                                "width_multiplier", "channel_multiplier", "depth_multiplier")},
    **{k: (_INT,) for k in ("in_chans", "stem_width", "cardinality", "base_width", "output_stride",
                             "down_kernel_size", "patch_size", "embed_dim", "depth", "num_heads", "reg_tokens")},
    **{k: (_BOOL,) for k in ("zero_init_last", "avg_down", "qkv_bias", "class_token", "no_embed_class",
                              "dynamic_img_size", "fc_norm", "pre_norm")},
    **{k: (_NAME,) for k in ("global_pool", "stem_type", "act_layer", "norm_layer", "block_fn")},
    "layers": (_INTS,), "channels": (_INTS,), "img_size": (_INT, _INTS),
}
# pretrained_cfg keys that make a loader fetch or open something: never taken from a config.json.
_LOCATION_KEYS = ("url", "file", "state_dict")


def _kind_ok(value: Any, kind: str) -> bool:
    if kind == _NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _NAME:  # a registry name (timm's layer names), never a path or a URL
        return isinstance(value, str) and bool(value) and all(c.isalnum() or c in "_-." for c in value)
    # a list in JSON; a tuple once a Recipe has made its model_args hashable (a checkpoint's stored recipe)
    return isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return (text[:60] + "...") if len(text) > 60 else text


def validate_model_args(model_args: Any, where: str, key: str = "model_args") -> dict[str, Any]:
    """``model_args`` of a config.json, checked against :data:`ALLOWED_MODEL_ARGS`; raises :class:`ConfigError`
    naming the first bad key."""
    if not isinstance(model_args, dict):
        raise ConfigError(f"{where}: {key} must be a JSON object of timm.create_model arguments, got "
                          f"{_shown(model_args)}.")
    for name, value in model_args.items():
        kinds = ALLOWED_MODEL_ARGS.get(name)
        if kinds is None:
            raise ConfigError(f"{where}: {key}.{name} is not allowed (a config.json may set only architecture "
                              f"arguments, never a file, URL or pretrained config for timm to open: "
                              f"{', '.join(sorted(ALLOWED_MODEL_ARGS))}). Remove it, or load weights you trust.")
        if not any(_kind_ok(value, kind) for kind in kinds):
            raise ConfigError(f"{where}: {key}.{name} must be {' or '.join(kinds)}, got {_shown(value)}.")
    return model_args


def validate_config(config: Any, where: str) -> dict[str, Any]:
    """Check an exported encoder's ``config.json`` (from a folder or the Hub) before anything uses it.

    Schema: ``architecture`` (a timm model name), ``num_classes`` / ``num_features`` (integers >= 0),
    ``model_args`` (:func:`validate_model_args`), ``pretrained_cfg`` (an object without ``url`` / ``file`` /
    ``state_dict``; ``input_size`` three positive integers, ``mean`` / ``std`` numbers, ``crop_pct`` a
    number, ``interpolation`` a name), ``ssl_zoo`` (an object; its ``metrics`` an object and its stored
    recipe's ``backbone.model_args`` checked like ``model_args``). Other top-level keys are kept as they
    are (timm adds its own). Raises :class:`ConfigError`: one line naming the key.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{where} is not a JSON object: an ssl_zoo/timm {CONFIG_NAME} is one. Export the model "
                          f"again.")
    arch = config.get("architecture")
    if not _kind_ok(arch, _NAME):
        raise ConfigError(f"{where}: architecture must be a timm model name, got {_shown(arch)}. Export the model "
                          f"again.")
    for key in ("num_classes", "num_features"):
        if key in config and not (_kind_ok(config[key], _INT) and config[key] >= 0):
            raise ConfigError(f"{where}: {key} must be an integer >= 0, got {_shown(config[key])}.")
    validate_model_args(config.get("model_args") or {}, where)
    pcfg = config.get("pretrained_cfg", {})
    if not isinstance(pcfg, dict):
        raise ConfigError(f"{where}: pretrained_cfg must be a JSON object, got {_shown(pcfg)}.")
    for key in _LOCATION_KEYS:
        if pcfg.get(key):
            raise ConfigError(f"{where}: pretrained_cfg.{key} is not allowed (it names weights for a loader to "
                              f"fetch or open; the weights are the folder's or repo's {WEIGHTS_NAME}). Remove it.")
    checks = {"input_size": lambda v: isinstance(v, list) and len(v) == 3 and all(_kind_ok(x, _INT) and x > 0
                                                                                   for x in v),
              "mean": lambda v: isinstance(v, list) and all(_kind_ok(x, _NUMBER) for x in v),
              "std": lambda v: isinstance(v, list) and all(_kind_ok(x, _NUMBER) and x > 0 for x in v),
              "crop_pct": lambda v: _kind_ok(v, _NUMBER) and v > 0,
              "interpolation": lambda v: _kind_ok(v, _NAME)}
    for key, ok in checks.items():
        if pcfg.get(key) is not None and not ok(pcfg[key]):
            raise ConfigError(f"{where}: pretrained_cfg.{key} has the wrong type or range: {_shown(pcfg[key])}.")
    info = config.get("ssl_zoo", {})
    if not isinstance(info, dict):
        raise ConfigError(f"{where}: ssl_zoo must be a JSON object, got {_shown(info)}.")
    if not isinstance(info.get("metrics", {}), dict):
        raise ConfigError(f"{where}: ssl_zoo.metrics must be a JSON object, got {_shown(info['metrics'])}.")
    backbone = (info.get("recipe_config") or {}).get("backbone") if isinstance(info.get("recipe_config"), dict) \
        else None
    if isinstance(backbone, dict) and backbone.get("model_args"):
        validate_model_args(backbone["model_args"], where, key="ssl_zoo.recipe_config.backbone.model_args")
    return config


def read_encoder_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of an exported encoder folder (or the file itself), validated (:func:`validate_config`)."""
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
    return validate_config(config, str(p))


__all__ = ["save_encoder", "read_encoder_config", "validate_config", "validate_model_args", "ConfigError",
           "ALLOWED_MODEL_ARGS", "timm_pretrained_cfg", "atomic_write_bytes", "WEIGHTS_NAME",
           "CONFIG_NAME",
           "NonFiniteWeightsError", "non_finite_tensors", "describe_non_finite"]
