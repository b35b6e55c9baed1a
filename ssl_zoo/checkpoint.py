"""Training-state checkpoints: one file, written atomically, loaded with ``weights_only=True``.

A checkpoint holds everything needed to continue a run exactly where it stopped:
the method's ``state_dict`` (encoders, heads, momentum copies and buffers such as
MoCo's queue), the optimiser, the lr scheduler, the (fp16) gradient scaler, the
epoch / step counters, every process's RNG states (python, numpy, torch, cuda) and
the recipe as plain data. Everything is stored as tensors and plain Python
containers so ``torch.load(..., weights_only=True)`` can read it (no pickled code).
"""
from __future__ import annotations

import io
import os
import random
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError
from .export import atomic_write_bytes, describe_non_finite, non_finite_tensors

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain containers (weights_only-loadable)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        # numpy arrays are not weights_only-safe: store the MT19937 key as a tensor.
        "numpy": {"kind": np_state[0], "key": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["key"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Serialise ``state`` to memory, then write it with temp file + rename (never half a file)."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buffer)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:  # disk full, read-only, quota: the previous checkpoint is untouched
        raise CheckpointError(f"Could not write the checkpoint {path}: {exc.strerror or exc}. The previous checkpoint "
                              f"(if any) is intact; free disk space or choose another --output, then "
                              f"--resume.") from exc
    return Path(path)


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the run folder that holds ``checkpoint.pt``."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise FileNotFoundError(f"No training checkpoint at {p}. --resume needs a run folder written by "
                                f"`ssl-zoo train` (it holds {CHECKPOINT_NAME}) or the path of that file.")
    return p


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (safe: ``weights_only=True``).

    Warns (``RuntimeWarning``) when the model state holds NaN/inf (written before training checked for it)."""
    p = resolve_checkpoint_path(path)
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch's own text suggests weights_only=False: never for a file we cannot trust
        raise CheckpointError(f"Could not read the training checkpoint {p} ({type(exc).__name__}): it is truncated, "
                              f"corrupted or not written by `ssl-zoo train`. Resume from another checkpoint, or "
                              f"start again with --overwrite.") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{p} is not an ssl_zoo training checkpoint (format {FORMAT_VERSION}). Resume from a "
                              f"folder written by `ssl-zoo train`, or start again with --overwrite.")
    bad = non_finite_tensors(state["model"]) if isinstance(state.get("model"), Mapping) else []
    if bad:
        warnings.warn(f"The model state in {p} has {describe_non_finite(bad)} holding NaN/inf: that run diverged, "
                      f"and training from it stops at its next checkpoint. Start a new run with a lower learning "
                      f"rate.", RuntimeWarning, stacklevel=2)
    return state


__all__ = ["CHECKPOINT_NAME", "capture_rng_state", "restore_rng_state", "save_checkpoint", "load_checkpoint",
           "resolve_checkpoint_path"]
