"""Method registry: a method name in a recipe maps to an ``SSLMethod`` subclass."""
from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

from .base import SSLMethod

# Built-in methods are imported lazily so `import ssl_zoo` stays light.
_BUILTIN = {
    "moco_v2": "ssl_zoo.methods.moco:MoCoV2",
    "simsiam": "ssl_zoo.methods.simsiam:SimSiam",
    "leoclr": "ssl_zoo.methods.leoclr:LeOCLR",
    "synth": "ssl_zoo.methods.synth:SynthPairs",
    "simclr": "ssl_zoo.methods.simclr:SimCLR",
    "leoclr_simclr": "ssl_zoo.methods.simclr:LeOCLRSimCLR",
}
_METHODS: dict[str, type[SSLMethod]] = {}


def register_method(name: str, cls: type[SSLMethod]) -> type[SSLMethod]:
    """Register an ``SSLMethod`` subclass under ``name`` (usable in recipes)."""
    if not (isinstance(cls, type) and issubclass(cls, SSLMethod)):
        raise TypeError(f"register_method({name!r}, ...) needs an SSLMethod subclass, got {cls!r}.")
    _METHODS[name] = cls
    return cls


def get_method_class(name: str) -> type[SSLMethod]:
    if name not in _METHODS and name in _BUILTIN:
        module, attr = _BUILTIN[name].split(":")
        _METHODS[name] = getattr(importlib.import_module(module), attr)
    if name not in _METHODS:
        known = sorted(set(_METHODS) | set(_BUILTIN))
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise KeyError(f"Unknown method {name!r}.{hint} Known methods: {', '.join(known)}.")
    return _METHODS[name]


def list_methods() -> list[str]:
    return sorted(set(_METHODS) | set(_BUILTIN))


def method_parameters(name: str) -> dict[str, Any]:
    """Keyword-only constructor parameters of a method (name -> default), for override checks."""
    cls = get_method_class(name)
    params = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        # image_size comes from the recipe's augment section, not from method_args
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "image_size":
            params[p.name] = None if p.default is inspect.Parameter.empty else p.default
    return params


__all__ = ["SSLMethod", "register_method", "get_method_class", "list_methods", "method_parameters"]
