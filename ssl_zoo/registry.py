"""One registry for every kind of named thing: recipes, methods, datasets.

A ``Registry`` maps names to items: ``register`` refuses a name twice, ``get`` raises an
``UnknownNameError`` whose one-line message suggests close names (difflib), ``list`` filters names with
fnmatch wildcards. Items may be registered lazily as ``"module:attribute"`` so that a registry of
torch modules can live in a torch-free import path (``import ssl_zoo`` must not import torch:
ssl_zoo/timm_registration.py). This module imports nothing beyond the standard library and errors.py.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from .errors import UserInputError

T = TypeVar("T")


class _Missing:
    """The type of ``_MISSING``: no default given to ``Registry.get``."""


_MISSING = _Missing()


class UnknownNameError(UserInputError, KeyError):
    """A name no registry entry has; the message suggests close names.

    It is a ``KeyError`` too, so ``except KeyError`` around a look-up (the dict it replaces) still works.
    """

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(UserInputError):
    """A name registered a second time (a ``ValueError``, as before the registries were unified)."""


def close_names(name: str, candidates: Iterable[str], *, cutoff: float = 0.6, substrings: bool = False,
                n: int = 3) -> list[str]:
    """Up to ``n`` candidates close to ``name``: with ``substrings``, names containing it first
    ("cars" -> "stanford_cars", which difflib alone misses), then spelling neighbours."""
    pool = sorted(set(candidates))
    inside = [c for c in pool if substrings and name and name.lower() in c.lower() and c != name]
    return list(dict.fromkeys(inside + difflib.get_close_matches(name, pool, n=n, cutoff=cutoff)))[:n]


def did_you_mean(name: str, candidates: Iterable[str], *, cutoff: float = 0.6, substrings: bool = False,
                 quote: bool = False) -> str:
    """``" Did you mean a or b?"`` (``" Did you mean 'a', 'b'?"`` with ``quote``), or ``""`` when nothing is close."""
    close = close_names(name, candidates, cutoff=cutoff, substrings=substrings)
    if not close:
        return ""
    return f" Did you mean {', '.join(map(repr, close)) if quote else ' or '.join(close)}?"


class Registry(Generic[T]):
    """Names -> items of one kind.

    ``kind`` names the items in messages ("recipe"). ``error`` is the ``UnknownNameError`` subclass ``get``
    raises; ``epilogue(registry)`` returns the text after the suggestion (where to see every name).
    ``cutoff`` / ``substrings`` / ``quote`` shape the suggestion (``did_you_mean``). ``on_first_use`` runs
    before the first look-up or listing: it imports the built-in entries, so importing the registry
    module stays cheap.
    """

    def __init__(self, kind: str, *, error: type[UnknownNameError] = UnknownNameError,
                 epilogue: Callable[[Registry[T]], str] | None = None, cutoff: float = 0.6,
                 substrings: bool = False, quote: bool = False,
                 on_first_use: Callable[[], object] | None = None) -> None:
        self.kind = kind
        self.error = error
        self._epilogue = epilogue
        self._cutoff = cutoff
        self._substrings = substrings
        self._quote = quote
        self._on_first_use = on_first_use
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = {}  # name -> "module:attribute", imported by the first get

    # -- adding ------------------------------------------------------------
    def register(self, name: str, item: T, *, overwrite: bool = False) -> T:
        """Add ``item`` under ``name`` and return it; a taken name raises ``DuplicateNameError`` unless
        ``overwrite`` (even for the same item: a second registration usually means two definitions)."""
        self._load()  # a built-in taking this name later would fail at import, far from this call
        if not overwrite and name in self:
            raise DuplicateNameError(f"{self.kind.capitalize()} {name!r} is already registered; pass "
                                     f"overwrite=True to replace it.")
        self._lazy.pop(name, None)
        self._items[name] = item
        return item

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``"module:attribute"``, imported by the first ``get(name)`` (keeps heavy imports out)."""
        if name in self:
            raise DuplicateNameError(f"{self.kind.capitalize()} {name!r} is already registered.")
        self._lazy[name] = target

    # -- looking up --------------------------------------------------------
    def _load(self) -> None:
        if self._on_first_use is not None:
            hook, self._on_first_use = self._on_first_use, None  # None first: the hook registers entries
            try:
                hook()
            except BaseException:
                self._on_first_use = hook  # a failed import is retried (and re-raised) by the next call
                raise

    def get(self, name: str, default: T | _Missing = _MISSING) -> T:
        """The item called ``name``; an unknown name raises ``self.error`` naming close names, or returns
        ``default`` when one is given (the ``dict.get`` form pytest's ``monkeypatch.setitem`` relies on)."""
        self._load()
        if name not in self._items and name in self._lazy:
            module, attribute = self._lazy[name].split(":")
            self._items[name] = getattr(importlib.import_module(module), attribute)
            del self._lazy[name]
        if name in self._items:
            return self._items[name]
        if not isinstance(default, _Missing):
            return default
        raise self.error(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        """``Unknown <kind> 'name'. Did you mean ...? <epilogue>``: the one line an unknown name gets."""
        hint = did_you_mean(name, self.names(), cutoff=self._cutoff, substrings=self._substrings, quote=self._quote)
        tail = f" {self._epilogue(self)}" if self._epilogue is not None else ""
        return f"Unknown {self.kind} {name!r}.{hint}{tail}"

    def names(self) -> list[str]:
        """Every registered name (lazy ones included), sorted."""
        self._load()
        return sorted(set(self._items) | set(self._lazy))

    def list(self, filter: str | Iterable[str] = "*") -> list[str]:
        """Sorted names matching an fnmatch pattern (``"moco*"``) or any of several patterns."""
        patterns = [filter] if isinstance(filter, str) else list(filter)
        return [n for n in self.names() if any(fnmatch.fnmatch(n, p) for p in patterns)]

    def loaded_items(self) -> Iterator[tuple[str, T]]:
        """(name, item) for every entry already imported (lazy ones are skipped, not imported)."""
        self._load()
        return iter(list(self._items.items()))

    # Mapping access, so tests can swap an entry with ``monkeypatch.setitem(registry, name, item)``.
    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __setitem__(self, name: str, item: T) -> None:
        self.register(name, item, overwrite=True)

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise self.error(self.unknown_message(name))
        self._items.pop(name, None)
        self._lazy.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._lazy

    def __len__(self) -> int:
        return len(self._items) + len(self._lazy)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


__all__ = ["Registry", "UnknownNameError", "DuplicateNameError", "close_names", "did_you_mean"]
