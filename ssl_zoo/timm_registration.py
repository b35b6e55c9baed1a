"""Register ssl_zoo's timm models (``ssl_zoo.backbones``) as soon as timm is imported.

``import ssl_zoo`` must stay light (``ssl-zoo --help`` and ``list`` never import torch or timm), yet
``import ssl_zoo`` must be enough for ``timm.create_model("resnet18_cifar")`` and for timm's
``hf-hub:`` / ``local-dir:`` loaders to build our architectures. So: if timm is already imported,
register now; otherwise a one-shot import finder wraps timm's loader and registers right after
timm's own ``__init__`` has run. Any import order gives the same result.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any


class _RegisterAfterLoading(importlib.abc.Loader):
    """Delegates to timm's own loader, then imports ``ssl_zoo.backbones`` (which registers with timm)."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        importlib.import_module("ssl_zoo.backbones")

    def __getattr__(self, name: str) -> Any:  # resource readers and the like: timm's loader answers
        return getattr(self._loader, name)


class _TimmFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "timm":
            return None
        remove_finder()  # one shot; the other finders locate the real timm
        spec = importlib.util.find_spec("timm")
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfterLoading(spec.loader)
        return spec


def remove_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TimmFinder)]


def register_with_timm() -> None:
    """Make ssl_zoo's architectures known to timm now (timm imported) or right after timm is imported."""
    if "timm" in sys.modules:
        importlib.import_module("ssl_zoo.backbones")
    elif not any(isinstance(f, _TimmFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TimmFinder())
