"""ssl_zoo: self-supervised visual encoders by name, with their recipes, training loop and weights."""
from __future__ import annotations

__version__ = "0.1.0"

from typing import Any

from .recipe import (
    AugmentCfg,
    BackboneCfg,
    Recipe,
    TrainCfg,
    WeightsCfg,
    get_recipe,
    list_models,
    list_pretrained,
    register_recipe,
)
from .timm_registration import register_with_timm

# timm learns ssl_zoo's architectures (resnet18_cifar, ...) when timm loads, without importing it here.
register_with_timm()

__all__ = [
    "__version__", "Recipe", "BackboneCfg", "AugmentCfg", "TrainCfg", "WeightsCfg", "register_recipe",
    "get_recipe", "list_models", "list_pretrained", "create_model", "create_method", "create_backbone",
    "register_method", "create_dataset", "push_to_hub", "embed",
]

# Names that need torch / timm load on first use: `import ssl_zoo`, `ssl-zoo --help` and `ssl-zoo list`
# only need the recipes (plain dataclasses), and importing torch + timm alone takes seconds.
_LAZY = {
    "create_model": "factory", "create_method": "factory", "create_backbone": "factory",
    "register_method": "methods", "create_dataset": "data", "push_to_hub": "hub", "embed": "embedding",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    raise AttributeError(f"module 'ssl_zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
