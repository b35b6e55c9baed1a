"""Stopping a run on Ctrl-C / SIGTERM at a safe point instead of dying mid-step."""
from __future__ import annotations

import contextlib
import signal
from types import FrameType
from typing import Any


class StopRequest:
    """Ctrl-C / SIGTERM set a flag; the loop checkpoints after the current optimiser step and stops.

    A second Ctrl-C raises KeyboardInterrupt at once (the last checkpoint on disk stays valid).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequest:
        with contextlib.suppress(ValueError):  # not the main thread: no handlers, Ctrl-C behaves as usual
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
