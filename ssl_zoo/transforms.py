"""View transforms: each method names the views it needs; this module builds them.

``"crop"``     MoCo v2 augmentation: RandomResizedCrop + colour jitter + grayscale + blur + flip.
``"original"`` LeOCLR's original view: the whole image resized (no crop), then the same
               colour / grayscale / blur / flip augmentations.
``"plain"``    the image only resized (synth's reconstruction target).
``"eval"``     Resize(size / crop_pct) + CenterCrop(size), the evaluation transform; crop_pct is the
               recipe's ``eval_crop_pct`` (1.0 for the CIFAR protocol and every 32-px recipe: the whole
               image), resampled with ``eval_interpolation`` (LeOCLR ImageNet: bicubic) or ``interpolation``.

For a given encoder (``ssl-zoo eval``): :func:`eval_transform` and :func:`linear_train_transform` take the
size, mean/std, interpolation and crop_pct from its timm ``pretrained_cfg`` (:func:`augment_cfg_for`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torchvision.transforms import v2

from .recipe import AUGMENT_PRESETS, AugmentCfg

VIEW_KINDS = ("crop", "original", "plain", "eval")


def _interpolation(name: str) -> v2.InterpolationMode:
    return v2.InterpolationMode(name.lower())


def blur_kernel_size(image_size: int) -> int:
    """About 10% of the image side, odd, at least 3 (SimCLR / MoCo v2 convention)."""
    k = max(3, int(0.1 * image_size))
    return k if k % 2 == 1 else k + 1


def _photometric(cfg: AugmentCfg, on_device: bool = False) -> list[Callable]:
    """Colour jitter, grayscale, blur and flip, as far as ``cfg.augment_preset`` keeps them.

    ``on_device``: only the flip; ``ssl_zoo.device_augment`` does the rest on the training device.
    """
    keep = AUGMENT_PRESETS[cfg.augment_preset]
    if on_device:
        keep = keep & {"flip"}
    ops = {
        "color": v2.RandomApply([v2.ColorJitter(*cfg.color_jitter)], p=cfg.color_jitter_p),
        "grayscale": v2.RandomGrayscale(p=cfg.grayscale_p),
        "blur": v2.RandomApply([v2.GaussianBlur(blur_kernel_size(cfg.image_size), sigma=cfg.blur_sigma)],
                               p=cfg.blur_p),
        "flip": v2.RandomHorizontalFlip(p=cfg.hflip_p),
    }
    return [op for name, op in ops.items() if name in keep]


def _finish(cfg: AugmentCfg) -> list[Callable]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)]


def build_view_transform(view: str, cfg: AugmentCfg, crop_pct: float | None = None, *,
                         photometric_on_device: bool = False) -> Callable[[Any], torch.Tensor]:
    """Transform from a PIL image (or uint8 tensor) to a normalised float tensor for one view.

    ``crop_pct`` (eval view only) defaults to ``cfg.eval_crop_pct``. ``photometric_on_device`` (training
    views only): stop after the geometric steps and return a uint8 tensor; ``device_augment.DeviceViewFinisher``
    does colour, grayscale, blur and normalisation on the batch.
    """
    if photometric_on_device and view == "eval":
        raise ValueError("the eval view has no photometric part to move to the device")
    size = cfg.image_size
    crop_pct = cfg.eval_crop_pct if crop_pct is None else crop_pct
    interp = _interpolation(cfg.interpolation)
    if view == "crop":
        crop = (v2.RandomResizedCrop(size, scale=cfg.crop_scale, interpolation=interp, antialias=True)
                if "crop" in AUGMENT_PRESETS[cfg.augment_preset] else v2.Resize((size, size), interpolation=interp,
                                                                                 antialias=True))
        ops = [v2.ToImage(), crop, *_photometric(cfg, photometric_on_device)]
    elif view == "original":
        ops = [v2.ToImage(), v2.Resize((size, size), interpolation=interp, antialias=True),
               *_photometric(cfg, photometric_on_device)]
    elif view == "plain":
        ops = [v2.ToImage(), v2.Resize((size, size), interpolation=interp, antialias=True)]
    elif view == "eval":
        interp = _interpolation(cfg.eval_interpolation or cfg.interpolation)
        ops = [v2.ToImage(), v2.Resize(int(round(size / crop_pct)), interpolation=interp, antialias=True),
               v2.CenterCrop(size)]
    else:
        raise ValueError(f"Unknown view {view!r}; known views: {', '.join(VIEW_KINDS)}.")
    return v2.Compose(ops if photometric_on_device else [*ops, *_finish(cfg)])


class MultiViewTransform:
    """Apply several transforms to one image and return the list of views."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Any) -> list[torch.Tensor]:
        return [t(image) for t in self.transforms]

    def __repr__(self) -> str:
        return f"MultiViewTransform({self.transforms!r})"


def build_multiview_transform(view_names: Sequence[str], cfg: AugmentCfg, *,
                              photometric_on_device: bool = False) -> MultiViewTransform:
    """One transform per view name; identical view names share one (random) transform object."""
    cache: dict[str, Callable] = {}
    return MultiViewTransform([
        cache.setdefault(v, build_view_transform(v, cfg, photometric_on_device=photometric_on_device))
        for v in view_names])


# -- the transforms of a given encoder (evaluation) --------------------------------------------------

def augment_cfg_for(encoder: nn.Module, image_size: int | None = None) -> AugmentCfg:
    """An ``AugmentCfg`` with the size, mean/std and interpolation of the encoder's ``pretrained_cfg``."""
    pcfg = dict(getattr(encoder, "pretrained_cfg", None) or {})
    kwargs: dict[str, Any] = {}
    for key in ("mean", "std"):
        if pcfg.get(key) is not None:
            kwargs[key] = tuple(float(v) for v in pcfg[key])
    if pcfg.get("interpolation") in ("bilinear", "bicubic", "nearest"):
        kwargs["interpolation"] = pcfg["interpolation"]
    size = image_size or (pcfg.get("input_size") or (3, 224, 224))[-1]
    return AugmentCfg(image_size=int(size), **kwargs)


def eval_transform(encoder: nn.Module, image_size: int | None = None) -> Callable:
    """Resize(size / crop_pct) + CenterCrop(size) + normalise (the ``"eval"`` view)."""
    crop_pct = float((getattr(encoder, "pretrained_cfg", None) or {}).get("crop_pct") or 0.875)
    return build_view_transform("eval", augment_cfg_for(encoder, image_size), crop_pct=crop_pct)


def linear_train_transform(encoder: nn.Module, image_size: int | None = None) -> Callable:
    """MoCo linear-probe train transform: RandomResizedCrop(size) + horizontal flip + normalise."""
    cfg = augment_cfg_for(encoder, image_size)
    return v2.Compose([
        v2.ToImage(),
        v2.RandomResizedCrop(cfg.image_size, interpolation=v2.InterpolationMode(cfg.interpolation), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(cfg.mean, cfg.std),
    ])
