"""The one reader and the one filter of state dicts: a weights file as a dict (:func:`read_checkpoint`:
safetensors; ``torch.load(weights_only=True)`` for PyTorch pickles), its tensors (:func:`state_dict_of`,
:func:`read_state_dict`), key prefixes and classifier heads cut (:func:`filter_state_dict`), and the canonical
digest of an encoder's state dict (:func:`state_dict_sha256`).

Below ``ssl_zoo.convert`` and ``ssl_zoo.weights`` (both use it), above ``ssl_zoo.download`` (its errors).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .download import CorruptWeightsError, WeightsNotFoundError


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A weights file as a dict: a ``.safetensors`` file, or any other file as a PyTorch pickle read
    with ``torch.load(weights_only=True)`` (legacy and upstream checkpoints: never arbitrary objects)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"Weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # safetensors raises its own error types for every kind of damage
            raise CorruptWeightsError(
                f"{path} ({path.stat().st_size} bytes) is not a readable safetensors file ({exc}). It is "
                f"probably truncated by an interrupted download or copy: delete it and download again "
                f"(hf_hub_download(..., force_download=True) for Hub files).") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CorruptWeightsError(
            f"torch.load(weights_only=True) refused {path}: {exc}. ssl_zoo never unpickles arbitrary Python "
            f"objects. If you trust the file, re-save just its tensors in a trusted environment, e.g. "
            f"torch.save(torch.load(path, weights_only=False)['state_dict'], 'state_dict.pt'), and load or "
            f"convert that (`ssl-zoo convert` writes safetensors).") from exc
    if not isinstance(obj, Mapping):
        raise CorruptWeightsError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict or state dict.")
    return dict(obj)


def state_dict_of(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: its ``state_dict`` / ``model`` / ``module`` entry, or the dict itself."""
    for key in ("state_dict", "model", "module"):
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    return {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in a weights file (``read_checkpoint`` + ``state_dict_of``); the one reader."""
    state = state_dict_of(read_checkpoint(path))
    if not state:
        raise CorruptWeightsError(f"{path} does not hold a state dict of tensors; use `ssl-zoo convert` to "
                                  f"import it.")
    return state


def filter_state_dict(state: Mapping[str, torch.Tensor], *, prefixes: Sequence[str] = (),
                      drop: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """The keys under the first of ``prefixes`` that holds any, with the prefix removed (every key
    when no prefix is given; none when no prefix matches), less the keys of the modules in ``drop``
    (classifier heads). The one prefix / head filter of loading, init and conversion."""
    sub = dict(state)
    if prefixes:
        sub = next(({k[len(p):]: v for k, v in state.items() if k.startswith(p)} for p in prefixes
                    if any(k.startswith(p) for k in state)), {})
    return {k: v for k, v in sub.items() if not any(k == d or k.startswith(d + ".") for d in drop)}


def head_prefixes(model: nn.Module) -> list[str]:
    """Module names of the classifier head (``["fc"]`` for ResNet); empty when there is none."""
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    if head is None or isinstance(head, nn.Identity) or not list(head.parameters()):
        return []
    return [name for name, module in model.named_modules() if module is head and name]


def classifier_names(model: nn.Module) -> list[str]:
    """Where the architecture keeps its classifier (``fc`` and timm's ``pretrained_cfg['classifier']``),
    whether or not this model has one: the keys a supervised checkpoint adds to an encoder's."""
    import timm

    names = ["fc"]
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    classifier = cfg.get("classifier")
    if classifier is None and cfg.get("architecture"):
        try:
            default = timm.models.get_pretrained_cfg(cfg["architecture"])
            classifier = default.classifier if default is not None else None
        except Exception:  # an architecture without a default cfg (ours): fc only
            classifier = None
    if classifier:
        names += [classifier] if isinstance(classifier, str) else list(classifier)
    return names


def state_dict_sha256(state: Mapping[str, Any]) -> str:
    """The canonical sha256 of a state dict: what a result measured when its weights are not one file.

    Over the tensors sorted by key, each as ``key``, dtype, shape and its bytes (contiguous, on the CPU, in
    the machine's byte order), separated by NUL bytes. BatchNorm ``num_batches_tracked`` counters are left
    out: they do not change the features, and converted upstream weights may lack them. Equal for the
    same weights however they were stored (a ``model.safetensors`` file, a training checkpoint, a built
    model's ``state_dict()``).
    """
    digest = hashlib.sha256()
    for key in sorted(k for k, v in state.items() if isinstance(v, torch.Tensor)
                      and not k.endswith("num_batches_tracked")):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def weights_digests(state: Mapping[str, Any], weights_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """What an evaluation result records to bind it to the weights it measured (``result["model"]``):

    - ``weights_sha256``: the sha256 of the ``.safetensors`` file the weights were loaded from (an exported
      folder's or a Hub repo's ``model.safetensors``: what ``ssl-zoo push`` uploads), else None;
    - ``state_dict_sha256``: :func:`state_dict_sha256` of the encoder as evaluated, always (a recipe's
      random init or its converted URL weights have no one file to name).
    A card or ``push --results`` accepts a result when either digest is the pushed weights'.
    """
    from .download import sha256_file

    file_sha = None
    if weights_file is not None and str(weights_file).endswith(".safetensors") and Path(weights_file).is_file():
        file_sha = sha256_file(weights_file)
    return {"weights_sha256": file_sha, "state_dict_sha256": state_dict_sha256(state)}


__all__ = ["read_checkpoint", "state_dict_of", "read_state_dict", "filter_state_dict", "head_prefixes",
           "classifier_names", "state_dict_sha256", "weights_digests"]
