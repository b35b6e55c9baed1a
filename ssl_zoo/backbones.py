"""Backbones timm lacks, registered with timm's ``register_model`` (``import ssl_zoo`` registers them).

``resnet18_cifar`` / ``resnet50_cifar``: the CIFAR variant of ResNet used by the SimSiam paper
(Appendix D) and the official MoCo CIFAR-10 demo: the stem is one 3x3 stride-1 convolution and
there is no max-pool, so a 32-px image leaves a 4x4 final map (timm's ImageNet stem, 7x7 stride 2
plus max-pool, leaves 1x1). Everything after the stem is timm's ``ResNet``, so the state_dict keys
are timm's and only ``conv1.weight`` differs in shape (3x3 instead of 7x7).

After ``import ssl_zoo``, ``timm.create_model("resnet18_cifar")`` builds it, and so do timm's
``hf-hub:`` / ``local-dir:`` loaders for exported ssl_zoo encoders whose config names it.
"""
from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn


class CifarResNet(ResNet):
    """timm ``ResNet`` with the CIFAR stem: conv 3x3 stride 1, no max-pool (feature map /8 overall)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stem_width = self.conv1.out_channels
        self.conv1 = nn.Conv2d(self.conv1.in_channels, stem_width, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")  # as timm inits convs
        self.maxpool = nn.Identity()
        # The stem no longer reduces: every stage's reduction is 4x smaller than timm's.
        for info in self.feature_info:
            info["reduction"] = max(1, info["reduction"] // 4)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {"url": "", "num_classes": 10, "input_size": (3, 32, 32), "pool_size": (4, 4), "crop_pct": 1.0,
            "interpolation": "bilinear", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
            "first_conv": "conv1", "classifier": "fc", "license": "apache-2.0", **kwargs}


# timm's register_model reads this module's `default_cfgs` (tag "untrained": no weights of its own).
default_cfgs = generate_default_cfgs({
    "resnet18_cifar.untrained": _cfg(),
    "resnet50_cifar.untrained": _cfg(),
})


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool)."""
    return build_model_with_cfg(CifarResNet, "resnet18_cifar", pretrained,
                                **{"block": BasicBlock, "layers": (2, 2, 2, 2), **kwargs})


@register_model
def resnet50_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with the CIFAR stem (3x3 stride-1 conv, no max-pool)."""
    return build_model_with_cfg(CifarResNet, "resnet50_cifar", pretrained,
                                **{"block": Bottleneck, "layers": (3, 4, 6, 3), **kwargs})


CIFAR_ARCHS = ("resnet18_cifar", "resnet50_cifar")

__all__ = ["CifarResNet", "resnet18_cifar", "resnet50_cifar", "CIFAR_ARCHS"]
