"""Dataset registry: name -> builder, the splits it has and the folder layout it expects."""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import SslZooError
from .base import ON_ERROR_CHOICES, LabelledImageDataset, label_fraction_indices

# builder(root: Path | None, split: str, **kwargs) -> LabelledImageDataset (no transform, full split)
Builder = Callable[..., LabelledImageDataset]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    builder: Builder
    layout: str
    splits: tuple[str, ...] = ("train", "test")
    description: str = ""


_REGISTRY: dict[str, DatasetInfo] = {}


class UnknownDatasetError(SslZooError, KeyError):
    """A dataset name that is not registered (the message suggests close names)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def register_dataset(name: str, builder: Builder, layout: str, splits: tuple[str, ...] = ("train", "test"),
                     description: str = "") -> None:
    """Register ``builder(root, split, **kwargs)`` under ``name``; ``layout`` is the folder tree shown to users."""
    if name in _REGISTRY and _REGISTRY[name].builder is not builder:
        raise ValueError(f"Dataset {name!r} is already registered.")
    _REGISTRY[name] = DatasetInfo(name, builder, layout, tuple(splits), description)


def list_datasets() -> list[str]:
    """Every registered dataset name, sorted."""
    return sorted(_REGISTRY)


def get_dataset_info(name: str) -> DatasetInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        # a short name inside a registered one ("cars" -> stanford_cars) first, then spelling neighbours
        inside = [n for n in sorted(_REGISTRY) if name and name.lower() in n]
        close = list(dict.fromkeys(inside + difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)))[:3]
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownDatasetError(f"Unknown dataset {name!r}.{hint} Known datasets: {', '.join(list_datasets())} "
                       f"(`ssl-zoo datasets` shows each layout).") from None


def dataset_layout(name: str) -> str:
    """The folder layout ``name`` expects under its root."""
    return get_dataset_info(name).layout


def create_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train",
                   transform: Callable | None = None, label_fraction: float = 1.0, seed: int = 0,
                   on_error: str = "raise", **kwargs: Any) -> LabelledImageDataset:
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
