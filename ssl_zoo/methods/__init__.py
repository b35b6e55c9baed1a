"""Method registry: a method name in a recipe maps to an ``SSLMethod`` subclass."""
from __future__ import annotations

import inspect
from typing import Any

from ..registry import Registry, UnknownNameError
from .base import SSLMethod


class UnknownMethodError(UnknownNameError):
    """A method name that is not registered (the message suggests close names)."""


_METHODS: Registry[type[SSLMethod]] = Registry(
    "method", error=UnknownMethodError, epilogue=lambda reg: f"Known methods: {', '.join(reg.names())}.")
# Built-in methods are imported on first use so `import ssl_zoo` stays light.
for _name, _target in {
    "moco_v2": "ssl_zoo.methods.moco:MoCoV2",
    "simsiam": "ssl_zoo.methods.simsiam:SimSiam",
    "leoclr": "ssl_zoo.methods.leoclr:LeOCLR",
    "synth": "ssl_zoo.methods.synth:SynthPairs",
    "simclr": "ssl_zoo.methods.simclr:SimCLR",
    "leoclr_simclr": "ssl_zoo.methods.simclr:LeOCLRSimCLR",
}.items():
    _METHODS.register_lazy(_name, _target)


def register_method(name: str, cls: type[SSLMethod], *, overwrite: bool = False) -> type[SSLMethod]:
    """Register an ``SSLMethod`` subclass under ``name`` (usable in recipes). Names must be unique."""
    if not (isinstance(cls, type) and issubclass(cls, SSLMethod)):
        raise TypeError(f"register_method({name!r}, ...) needs an SSLMethod subclass, got {cls!r}.")
    return _METHODS.register(name, cls, overwrite=overwrite)


def get_method_class(name: str) -> type[SSLMethod]:
    """The ``SSLMethod`` subclass registered as ``name``; an unknown name raises ``UnknownMethodError``
    (a ``UserInputError`` and a ``KeyError``) suggesting close names."""
    return _METHODS.get(name)


def list_methods() -> list[str]:
    """Every registered method name, sorted."""
    return _METHODS.names()


def method_parameters(name: str) -> dict[str, Any]:
    """Keyword-only constructor parameters of a method (name -> default), for override checks."""
    cls = get_method_class(name)
    params = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        # image_size comes from the recipe's augment section, not from method_args
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "image_size":
            params[p.name] = None if p.default is inspect.Parameter.empty else p.default
    return params


__all__ = [
    "SSLMethod", "UnknownMethodError", "register_method", "get_method_class", "list_methods", "method_parameters",
]
