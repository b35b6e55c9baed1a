"""ssl_zoo: self-supervised visual encoders by name, with their recipes, training loop and weights."""
from __future__ import annotations

__version__ = "0.1.0"

from .recipe import (AugmentCfg, BackboneCfg, Recipe, TrainCfg, WeightsCfg, get_recipe, list_models,
                     list_pretrained, register_recipe)
from . import backbones  # noqa: F401  (registers the CIFAR ResNets with timm)
from .factory import create_backbone, create_method, create_model
from .methods import register_method

__all__ = [
    "__version__", "Recipe", "BackboneCfg", "AugmentCfg", "TrainCfg", "WeightsCfg", "register_recipe",
    "get_recipe", "list_models", "list_pretrained", "create_model", "create_method", "create_backbone",
    "register_method", "create_dataset", "push_to_hub",
]


def __getattr__(name: str):
    # Heavier subsystems load on first use, keeping `import ssl_zoo` fast.
    if name == "create_dataset":
        from .data import create_dataset
        return create_dataset
    if name == "push_to_hub":
        from .hub import push_to_hub
        return push_to_hub
    raise AttributeError(f"module 'ssl_zoo' has no attribute {name!r}")
