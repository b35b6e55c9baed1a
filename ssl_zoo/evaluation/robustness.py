"""Random-crop robustness test (LeOCLR Sec. 5, Table 6).

A trained classifier (frozen encoder + linear probe, or a fine-tuned network) is evaluated on the
test images twice in the paper: the **centre-crop** test of SimCLR / MoCo (resize the shorter side to
256, bicubic, centre crop 224) and a **random-crop** test (resize the image to 256 x 256, then a
random crop resized to 224). The paper gives no crop scale for the random test; torchvision's
RandomResizedCrop default (0.08, 1) is its likeliest reading. This module runs the centre crop and a
list of random-crop scale ranges (default (0.08, 1), (0.2, 1), (0.5, 1)), at any image size: the
resize is ``round(size / crop_pct)`` (256 for 224 at crop_pct 0.875).

Each test image's crop is seeded by ``(seed, setting index, image index)``, so a seed gives the same
crops, and the same accuracies, in any number of processes and DataLoader workers.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .finetune import SeededTransformDataset, evaluate_classifier

if TYPE_CHECKING:
    from accelerate import Accelerator

DEFAULT_SCALES: tuple[tuple[float, float], ...] = ((0.08, 1.0), (0.2, 1.0), (0.5, 1.0))


@dataclass(frozen=True)
class CropSetting:
    """``scale=None`` is the centre-crop test; otherwise RandomResizedCrop with this scale range."""

    scale: tuple[float, float] | None = None

    @property
    def name(self) -> str:
        return "center" if self.scale is None else f"random_{self.scale[0]:g}-{self.scale[1]:g}"

    def __post_init__(self) -> None:
        if self.scale is not None and not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"a crop scale range must satisfy 0 < low <= high <= 1, got {self.scale}.")


def crop_settings(scales: Sequence[tuple[float, float]] = DEFAULT_SCALES, center: bool = True) -> list[CropSetting]:
    """The centre-crop test followed by one random-crop test per scale range."""
    return ([CropSetting(None)] if center else []) + [CropSetting((float(lo), float(hi))) for lo, hi in scales]


def random_crop_transform(image_size: int, scale: tuple[float, float], resize: int, mean: Sequence[float],
                          std: Sequence[float], interpolation: str = "bicubic") -> Callable:
    """Resize to ``resize x resize`` (aspect not kept, as in the paper), RandomResizedCrop(image_size, scale),
    normalise. No flip: the test changes the crop only."""
    from torchvision.transforms import v2

    mode = v2.InterpolationMode(interpolation)
    return v2.Compose([
        v2.ToImage(),
        v2.Resize((resize, resize), interpolation=mode, antialias=True),
        v2.RandomResizedCrop(image_size, scale=scale, interpolation=mode, antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])


def crop_robustness(model: nn.Module, dataset: Any, settings: Sequence[CropSetting], center_transform: Callable,
                    random_transform: Callable[[tuple[float, float]], Callable], seed: int = 0,
                    batch_size: int = 256, num_workers: int = 0, accelerator: Accelerator | None = None,
                    device: torch.device | str | None = None) -> dict[str, dict[str, float]]:
    """Accuracy of ``model`` (images -> logits) on ``dataset`` under each crop setting.

    ``dataset`` is a ``LabelledImageDataset``; its transform is replaced per setting by
    ``center_transform`` or ``random_transform(scale)``. Returns ``{setting.name: {"top1", "top5"}}``
    (fractions), in the order of ``settings``.
    """
    import copy

    if not settings:
        raise ValueError("no crop setting to evaluate.")
    names = [s.name for s in settings]
    if len(set(names)) != len(names):
        raise ValueError(f"crop settings repeat: {names}.")
    out: dict[str, dict[str, float]] = {}
    for i, setting in enumerate(settings):
        view = copy.copy(dataset)
        view.transform = center_transform if setting.scale is None else random_transform(setting.scale)
        seeded = SeededTransformDataset(view, seed=seed, epoch=i)
        out[setting.name] = evaluate_classifier(model, seeded, batch_size=batch_size, num_workers=num_workers,
                                                accelerator=accelerator, device=device)
    return out
