"""One root for every error a user can cause: ``SslZooError``.

Each user-facing error derives from it (and keeps the builtin base callers already catch, e.g.
``FileNotFoundError`` for a missing dataset folder). ``ssl-zoo`` turns any ``SslZooError`` into one
``error: ...`` line on stderr and its ``exit_code`` (2 unless a class says otherwise); every other
exception is a bug and keeps its traceback. docs/troubleshooting.md lists them.
"""
from __future__ import annotations


class SslZooError(Exception):
    """An error caused by the input (arguments, files, data, network), explained in one line."""

    exit_code: int = 2


class UserInputError(SslZooError, ValueError):
    """A value the user gave is out of range or does not fit (an option, a recipe field, a file)."""


class CheckpointError(SslZooError, RuntimeError):
    """A training checkpoint that cannot be read or written."""


__all__ = ["SslZooError", "UserInputError", "CheckpointError"]
