"""The run folder of ``ssl-zoo train``: one writer at a time, no silent overwrite, no half-written leftovers.

- :func:`check_run_folder` refuses a folder that already holds a run (a checkpoint, an exported
  model or a step log) unless the caller resumes it or asks to overwrite it.
- :class:`RunLock` is an exclusive ``flock`` on ``OUTPUT/.ssl_zoo.lock`` held for the whole run; the
  file records the holder's PID so a second process can name it. The kernel drops the lock when
  the holder exits, however it exits, so a crashed run never leaves a stale lock behind.
- :func:`clean_stale_temp_files` removes ``.checkpoint.pt.*.tmp``-style files that a process killed
  in the middle of an atomic write left (only while the lock is held: no writer can own them).
- :func:`trim_log` drops the ``log.jsonl`` records written after the checkpoint a run resumes
  from, so a resumed run does not log the same steps twice.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from .checkpoint import CHECKPOINT_NAME
from .errors import SslZooError
from .export import CONFIG_NAME, WEIGHTS_NAME, atomic_write_bytes

LOCK_NAME = ".ssl_zoo.lock"
LOG_NAME = "log.jsonl"
SKIPPED_NAME = "skipped_images.txt"  # --skip-bad-images: one "path<TAB>reason" line per skipped image
# The files ``train`` writes: their presence means the folder holds a run; --overwrite removes them.
RUN_FILES: tuple[str, ...] = (CHECKPOINT_NAME, WEIGHTS_NAME, CONFIG_NAME, LOG_NAME, SKIPPED_NAME)

F = TypeVar("F", bound=Callable[..., Any])


class RunFolderError(SslZooError, RuntimeError):
    """The output folder holds another run, is used by another process, or cannot be used."""


def existing_run_files(out_dir: str | os.PathLike) -> list[str]:
    """Names of the non-empty files in ``out_dir`` that a training run writes (none for a new folder).

    Empty files hold nothing to lose: a run that failed before its first log record leaves an empty
    ``log.jsonl`` (the other files are written atomically, never empty)."""
    root = Path(out_dir)
    return [name for name in RUN_FILES if (root / name).is_file() and (root / name).stat().st_size > 0]


def check_run_folder(out_dir: str | os.PathLike, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run in a folder that holds one, unless ``resume`` or ``overwrite``."""
    root = Path(out_dir)
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other: --resume continues the run in "
                             f"{root}, --overwrite deletes it. Pass one of them.")
    if root.exists() and not root.is_dir():
        raise RunFolderError(f"--output {root} is a file, not a folder; choose a folder path for the run.")
    found = existing_run_files(root)
    if found and not resume and not overwrite:
        raise RunFolderError(f"{root} already holds a run ({', '.join(found)}); pass --resume to continue it, "
                             f"--overwrite to replace it, or choose another --output.")


def remove_run_files(out_dir: str | os.PathLike) -> list[str]:
    """Delete the files a previous run wrote (``--overwrite``); returns their names."""
    root = Path(out_dir)
    removed = existing_run_files(root)
    for name in removed:
        (root / name).unlink()
    return removed


def clean_stale_temp_files(out_dir: str | os.PathLike, names: Iterable[str] = RUN_FILES) -> list[str]:
    """Remove ``.NAME.*.tmp`` files of interrupted atomic writes (``export.atomic_write_bytes``).

    Call only while holding :class:`RunLock`: then no live writer can own them.
    """
    root = Path(out_dir)
    removed = []
    for name in names:
        for tmp in root.glob(f".{name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp.name)
    return sorted(removed)


def trim_log(log_path: str | os.PathLike, last_step: int) -> int:
    """Keep only the records of steps ``<= last_step`` (and drop a torn last line); returns how many
    records were dropped. The file is rewritten atomically, and only when something changes."""
    path = Path(log_path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            keep = isinstance(record, dict) and int(record.get("step", 0)) <= last_step
        except (ValueError, TypeError):  # a line cut short by a crash in the middle of a write
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write_bytes(path, "".join(f"{line}\n" for line in kept).encode())
    return dropped


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``OUTPUT/.ssl_zoo.lock``; a context manager.

    ``acquire`` raises :class:`RunFolderError` naming the PID (and host) of the process that holds it.
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self._fd: int | None = None

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not isinstance(info, dict) or "pid" not in info:
            return "another process"
        return f"process {info['pid']}" + (f" on {info['host']}" if info.get("host") else "")

    def acquire(self) -> RunLock:
        import fcntl
        import socket

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunFolderError(f"Cannot create the run folder lock {self.path}: {exc.strerror}. Choose an "
                                 f"--output folder you can write to.") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunFolderError(f"{self.path.parent} is in use by {self.holder()} (lock file {self.path}); wait "
                                 f"for that run to end or stop it, or choose another --output.") from None
        except OSError as exc:  # e.g. a file system without flock support
            os.close(fd)
            raise RunFolderError(f"Cannot lock {self.path}: {exc.strerror}; use an --output folder on a local "
                                 f"file system.") from exc
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            # The file stays: deleting it would let a waiting process lock a file another one re-creates.
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# -- releasing what a run holds, whichever way train() ends ---------------------------------------------

_CLEANUP: contextvars.ContextVar[contextlib.ExitStack | None] = contextvars.ContextVar("ssl_zoo_run_cleanup",
                                                                                         default=None)


def run_scope(fn: F) -> F:
    """Decorator: resources registered with :func:`hold_until_return` inside ``fn`` are released when it
    returns or raises (so ``train`` keeps its flat body instead of one ``with`` block around all of it)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with contextlib.ExitStack() as stack:
            token = _CLEANUP.set(stack)
            try:
                return fn(*args, **kwargs)
            finally:
                _CLEANUP.reset(token)
    return wrapper  # type: ignore[return-value]


def hold_until_return(cm: Any) -> Any:
    """Enter ``cm`` and exit it when the enclosing :func:`run_scope` function ends."""
    stack = _CLEANUP.get()
    if stack is None:
        raise RuntimeError("hold_until_return() needs a caller decorated with run_scope.")
    return stack.enter_context(cm)


def claim_run_folder(accelerator: Any, out_dir: Path, resume: bool, overwrite: bool) -> None:
    """The main process locks ``out_dir`` until the :func:`run_scope` function returns, refuses a folder
    holding another run (unless resuming or overwriting), applies ``--overwrite`` and removes stale temp
    files. Every process raises the same :class:`RunFolderError` when that fails, so none waits for the
    others forever."""
    error = None
    if accelerator.is_main_process:
        try:
            # Lock first: a run in progress is named as such, and no other run can start or end meanwhile.
            hold_until_return(RunLock(out_dir))
            check_run_folder(out_dir, resume=resume, overwrite=overwrite)
            removed = remove_run_files(out_dir) if overwrite else []
            if removed:
                accelerator.print(f"--overwrite: removed the previous run's {', '.join(removed)} from {out_dir}.")
            clean_stale_temp_files(out_dir)
        except RunFolderError as exc:
            error = str(exc)
        except OSError as exc:
            error = f"Cannot use {out_dir} as the run folder: {exc}. Choose an --output folder you can write to."
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list
        error = broadcast_object_list([error])[0]
    if error is not None:
        raise RunFolderError(error)


__all__ = ["RunFolderError", "RunLock", "LOCK_NAME", "RUN_FILES", "existing_run_files", "check_run_folder",
           "remove_run_files", "clean_stale_temp_files", "trim_log", "run_scope", "hold_until_return",
           "claim_run_folder"]
