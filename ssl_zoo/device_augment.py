"""Photometric augmentation on the training device (``ssl-zoo train --augment-on-device``).

When the DataLoader workers are the bottleneck (224-px JPEGs, few CPU cores per GPU), the workers can do
only the geometric part of each view (decode, crop, flip, uint8 tensor) and the training device does the
photometric part on the whole batch: colour jitter, grayscale, blur, then float conversion and
normalisation. The distribution is the one ``ssl_zoo.transforms`` draws, per image:

* colour jitter with probability ``color_jitter_p``; brightness, contrast and saturation factors uniform in
  ``[max(0, 1 - s), 1 + s]``, hue uniform in ``[-h, h]``, applied in a random order drawn **per image**
  (as torchvision's ColorJitter draws one per call), with torchvision's formulas (kornia's
  ``adjust_*_with_*`` functions are the same blends, and take one factor per image);
* grayscale with probability ``grayscale_p`` (torchvision's weights, 3 channels);
* Gaussian blur with probability ``blur_p``, sigma uniform in ``blur_sigma`` per image, the same kernel
  size and reflect padding;
* flip stays in the workers: it is geometric and commutes with every photometric step above.

Two deliberate differences from the worker path (documented in docs/training.md): the steps run in float32
on [0, 1] instead of uint8 (no rounding to 1/255 between steps), and the random numbers come from the
device's generator, so the same seed gives other (equally distributed) views than the worker path.
Needs kornia (``pip install ssl_zoo[device-augment]``).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .errors import UserInputError
from .recipe import AUGMENT_PRESETS, AugmentCfg

# The views whose photometric part moves to the device; "plain" and "eval" views have none.
PHOTOMETRIC_VIEWS = frozenset({"crop", "original"})
TORCHVISION_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
_ORDERS = torch.tensor(list(itertools.permutations(range(4))))  # the 24 orders of the 4 colour steps


def _kornia() -> Any:
    try:
        import kornia
    except ImportError as exc:
        raise UserInputError("--augment-on-device needs kornia: pip install 'ssl_zoo[device-augment]' "
                             "(or pip install kornia).") from exc
    return kornia


def _uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(low, high)


class PerImageColorJitter(nn.Module):
    """torchvision's ColorJitter with probability ``p``, every image with its own factors and its own order."""

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float, p: float) -> None:
        super().__init__()
        enhance = _kornia().enhance
        self.p = p
        self.ranges = [(max(0.0, 1 - s), 1 + s) for s in (brightness, contrast, saturation)] + [(-hue, hue)]
        self.steps = (enhance.adjust_brightness_accumulative, enhance.adjust_contrast_with_mean_subtraction,
                      enhance.adjust_saturation_with_gray_subtraction,
                      lambda x, f: enhance.adjust_hue(x, f * 2 * math.pi))  # hue factor in turns, as torchvision

    def forward(self, images: torch.Tensor, factors: torch.Tensor | None = None,
                orders: torch.Tensor | None = None, apply: torch.Tensor | None = None) -> torch.Tensor:
        """``images`` float (B, 3, H, W) in [0, 1]; ``factors`` (B, 4), ``orders`` (B, 4), ``apply`` (B,) bool
        may be given (tests); otherwise they are drawn here."""
        n, device = images.shape[0], images.device
        if apply is None:
            apply = torch.rand(n, device=device) < self.p
        if factors is None:
            factors = torch.stack([_uniform(n, lo, hi, device) for lo, hi in self.ranges], dim=1)
        if orders is None:
            orders = _ORDERS.to(device)[torch.randint(len(_ORDERS), (n,), device=device)]
        out = images.clone()
        for slot in range(4):  # at slot s, each image takes its own s-th step: 16 small batched calls at most
            for step, fn in enumerate(self.steps):
                idx = torch.nonzero(apply & (orders[:, slot] == step)).flatten()
                if idx.numel():
                    out[idx] = fn(out[idx], factors[idx, step]).clamp_(0, 1)
        return out


class DevicePhotometric(nn.Module):
    """The photometric half of a view's augmentation, on a uint8 batch: returns the normalised float batch."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, cfg: AugmentCfg, photometric: bool = True) -> None:
        super().__init__()
        keep = AUGMENT_PRESETS[cfg.augment_preset] if photometric else frozenset()
        augment = _kornia().augmentation
        from .transforms import blur_kernel_size

        self.color = PerImageColorJitter(*cfg.color_jitter, p=cfg.color_jitter_p) if "color" in keep else None
        # torchvision's weights (0.2989, not kornia's 0.299), so a grey view is the worker path's grey view.
        self.grayscale = (augment.RandomGrayscale(rgb_weights=torch.tensor(TORCHVISION_GRAY_WEIGHTS),
                                                  p=cfg.grayscale_p) if "grayscale" in keep else None)
        k = blur_kernel_size(cfg.image_size)
        self.blur = (augment.RandomGaussianBlur((k, k), sigma=tuple(cfg.blur_sigma), border_type="reflect",
                                                p=cfg.blur_p) if "blur" in keep else None)
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
        if self.color is not None:
            x = self.color(x)
        if self.grayscale is not None:
            x = self.grayscale(x)
        if self.blur is not None:
            x = self.blur(x)
        return (x - self.mean) / self.std


class DeviceViewFinisher(nn.Module):
    """One :class:`DevicePhotometric` per view name: photometric for crop/original views, normalise-only
    for the others. Call it on the list of uint8 view batches the loader yields."""

    def __init__(self, view_names: Sequence[str], cfg: AugmentCfg) -> None:
        super().__init__()
        self.view_names = list(view_names)
        self.finishers = nn.ModuleList(DevicePhotometric(cfg, photometric=v in PHOTOMETRIC_VIEWS)
                                       for v in self.view_names)

    def forward(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(views) != len(self.finishers):
            raise ValueError(f"expected {len(self.finishers)} views ({self.view_names}), got {len(views)}")
        return [finish(v) for finish, v in zip(self.finishers, views)]
