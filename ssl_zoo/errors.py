"""One root for every error a user can cause: ``SslZooError``.

Each user-facing error derives from it (and keeps the builtin base callers already catch, e.g.
``FileNotFoundError`` for a missing dataset folder). ``ssl-zoo`` turns any ``SslZooError`` into one
``error: ...`` line on stderr and its ``exit_code`` (2 unless a class says otherwise); every other
exception is a bug and keeps its traceback. docs/troubleshooting.md lists them.
"""
from __future__ import annotations

import sys
from collections.abc import Callable


class SslZooError(Exception):
    """An error caused by the input (arguments, files, data, network), explained in one line."""

    exit_code: int = 2


class UserInputError(SslZooError, ValueError):
    """A value the user gave is out of range or does not fit (an option, a recipe field, a file)."""


class UsageError(UserInputError):
    """A command line argparse refuses (unknown option, invalid choice, missing argument)."""


class CheckpointError(SslZooError, RuntimeError):
    """A training checkpoint that cannot be read or written."""


def one_line(message: object) -> str:
    """A message on one line (some libraries put newlines in theirs)."""
    return " ".join(str(message).split())


def report_user_error(exc: BaseException, prefix: str = "", scrub: Callable[[str], str] | None = None) -> int:
    """Print ``error: PREFIX<message>`` as one stderr line and return the exit code: the error's own
    ``exit_code`` for an ``SslZooError``, 2 for any other error a caller decided is the user's."""
    message = scrub(str(exc)) if scrub is not None else str(exc)
    print(f"error: {prefix}{one_line(message)}", file=sys.stderr)
    return exc.exit_code if isinstance(exc, SslZooError) else 2


__all__ = ["SslZooError", "UserInputError", "UsageError", "CheckpointError", "one_line", "report_user_error"]
