"""Dataset registry: name -> builder, the splits it has and the folder layout it expects."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..registry import Registry, UnknownNameError
from .base import ON_ERROR_CHOICES, LabelledImageDataset, OnError, label_fraction_indices

# builder(root: Path | None, split: str, **kwargs) -> LabelledImageDataset (no transform, full split)
Builder = Callable[..., LabelledImageDataset]


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its builder, the folder layout shown to users and its splits."""

    name: str
    builder: Builder
    layout: str
    splits: tuple[str, ...] = ("train", "test")
    description: str = ""
    # False for the datasets made in memory (digits, photo_patches, ...): they read no folder, so a --data
    # given to them is a mistake (ssl-zoo eval) or the user's own images (ssl-zoo train).
    reads_folder: bool = True


class UnknownDatasetError(UnknownNameError):
    """A dataset name that is not registered (the message suggests close names)."""


# Quoted suggestions, short names found inside registered ones ("cars" -> 'stanford_cars') and a lower
# cutoff than recipes: dataset names are short, often typed from memory of a paper's table.
_REGISTRY: Registry[DatasetInfo] = Registry(
    "dataset", error=UnknownDatasetError, cutoff=0.5, substrings=True, quote=True,
    epilogue=lambda reg: f"Known datasets: {', '.join(reg.names())} (`ssl-zoo datasets` shows each layout).")


def register_dataset(name: str, builder: Builder, layout: str, splits: tuple[str, ...] = ("train", "test"),
                     description: str = "", *, overwrite: bool = False, reads_folder: bool = True) -> None:
    """Register ``builder(root, split, **kwargs)`` under ``name``; ``layout`` is the folder tree shown to users.
    ``reads_folder=False``: the builder ignores ``root`` (an embedded or generated dataset).

    Registering the same builder again replaces its description (a re-imported module); another builder under
    a taken name raises ``DuplicateNameError`` unless ``overwrite``.
    """
    same_builder = name in _REGISTRY and _REGISTRY.get(name).builder is builder
    _REGISTRY.register(name, DatasetInfo(name, builder, layout, tuple(splits), description, reads_folder),
                       overwrite=overwrite or same_builder)


def list_datasets() -> list[str]:
    """Every registered dataset name, sorted."""
    return _REGISTRY.names()


def get_dataset_info(name: str) -> DatasetInfo:
    """The registered dataset ``name``; an unknown name raises ``UnknownDatasetError`` suggesting close names."""
    return _REGISTRY.get(name)


def dataset_layout(name: str) -> str:
    """The folder layout ``name`` expects under its root."""
    return get_dataset_info(name).layout


def create_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train",
                   transform: Callable | None = None, label_fraction: float = 1.0, seed: int = 0,
                   on_error: OnError = "raise", **kwargs: Any) -> LabelledImageDataset:
    """Dataset ``name`` read from ``root`` in its published layout.

    Returns a map-style dataset of ``(transform(rgb_pil_image), int_label)`` with ``.classes`` and
    ``.targets``. ``label_fraction`` keeps that share of each class (at least one image), the same
    images for the same ``seed``. ``on_error="skip"`` replaces unreadable images by the next one
    (with a warning naming the file) instead of raising. Extra keyword arguments go to the builder.
    """
    info = get_dataset_info(name)
    if split not in info.splits:
        raise ValueError(f"Dataset {name!r} has no split {split!r}; its splits are: {', '.join(info.splits)}.")
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    if not 0.0 < float(label_fraction) <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction}")
    dataset = info.builder(Path(root).expanduser() if root is not None else None, split, **kwargs)
    dataset.transform = transform
    dataset.on_error = on_error
    if label_fraction < 1.0:
        dataset = dataset.subset(label_fraction_indices(dataset.targets, label_fraction, seed))
    return dataset
