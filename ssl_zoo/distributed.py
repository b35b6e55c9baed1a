"""Collective helpers that are no-ops in a single process (torch.distributed, or the Accelerator the caller
passes; Accelerate is never imported here for one process), and the collective timeout: how long a process
waits for the others before the run stops."""
from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .errors import SslZooError


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


@torch.no_grad()
def concat_all_gather(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from every process along dim 0 (rank order). No gradient."""
    if not is_distributed():
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


def broadcast_(tensor: Tensor, src: int = 0) -> Tensor:
    if is_distributed():
        dist.broadcast(tensor, src)
    return tensor


def any_process(accelerator: Any, flag: bool) -> bool:
    """True on every process if it is true on any (keeps processes in lock-step)."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0)


def gather_objects(accelerator: Any, obj: Any) -> list[Any]:
    """``obj`` of every process, in process order (one process: ``[obj]`` without a collective)."""
    if accelerator.num_processes == 1:
        return [obj]
    from accelerate.utils import gather_object
    return gather_object([obj])


def leave_together() -> None:
    """Wait for every process, then destroy the default process group (no-op without one).

    A process that reaches interpreter exit first tears gloo down while its peers' threads still talk to it,
    which can abort it after all the work is done ("terminate called without an active exception", exit
    -6). Only for a successful end: a peer that failed closes its sockets, so the barrier raises, and the group
    is destroyed anyway.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        dist.barrier()
    except Exception:  # a failed peer: nothing left to wait for
        pass
    dist.destroy_process_group()


_LEAVING_AT_EXIT = False


def leave_together_at_exit() -> None:
    """Run :func:`leave_together` at interpreter exit (registered once). The command-line entry points call it
    after a successful run; in-process callers that keep using the group until they return are unaffected."""
    global _LEAVING_AT_EXIT
    if not _LEAVING_AT_EXIT:
        import atexit
        atexit.register(leave_together)
        _LEAVING_AT_EXIT = True


# A collective (all-reduce, all-gather, barrier) waits at most this long for every process; then the
# waiting processes raise instead of blocking forever behind a stalled or dead one. 30 minutes is
# torch's own default: it must exceed the slowest legitimate wait (rank 0 writing a checkpoint or the
# export while the others wait at a barrier, a slow first batch).
COLLECTIVE_TIMEOUT_ENV = "SSL_ZOO_COLLECTIVE_TIMEOUT"
DEFAULT_COLLECTIVE_TIMEOUT_S = 1800.0


class CollectiveTimeoutError(SslZooError, RuntimeError):
    """Another process did not join a collective operation within the collective timeout."""

    exit_code = 1  # the run diverged or a peer stalled: not a wrong argument (docs/troubleshooting.md)


def collective_timeout_seconds(value: float | None = None) -> float:
    """``value`` (``--collective-timeout``), else ``$SSL_ZOO_COLLECTIVE_TIMEOUT``, else 1800 s."""
    source = "--collective-timeout"
    if value is None:
        raw = os.environ.get(COLLECTIVE_TIMEOUT_ENV)
        if raw is None or not raw.strip():
            return DEFAULT_COLLECTIVE_TIMEOUT_S
        source = COLLECTIVE_TIMEOUT_ENV
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{COLLECTIVE_TIMEOUT_ENV}={raw!r} is not a number of seconds; set it to e.g. 600 "
                             f"or unset it (default {DEFAULT_COLLECTIVE_TIMEOUT_S:g} s).") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{source} must be a positive number of seconds, got {value!r} "
                         f"(default {DEFAULT_COLLECTIVE_TIMEOUT_S:g} s).")
    return float(value)


class LaunchError(SslZooError, RuntimeError):
    """A launcher started processes this process cannot join (one line says how to launch instead)."""


def adopt_cpu_launch() -> None:
    """Under ``torchrun`` on a machine with no GPU (or other accelerator), ask Accelerate for gloo on the CPU.

    Accelerate reads torchrun's ``LOCAL_RANK`` as "one process per GPU"; finding no GPU it falls back to a
    single process, so every rank believed it was the main one (two owners of the run folder, a gloo
    traceback). ``accelerate launch`` on a CPU machine sets ``ACCELERATE_USE_CPU=1`` itself; this does the same
    for torchrun, and only where the launch would otherwise be misread (an explicit value is kept)."""
    if os.environ.get("LOCAL_RANK") is None or os.environ.get("ACCELERATE_USE_CPU") is not None:
        return
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return
    accel = getattr(torch, "accelerator", None)
    has_device = accel.is_available() if accel is not None else torch.cuda.is_available()
    if world > 1 and not has_device:
        os.environ["ACCELERATE_USE_CPU"] = "1"


def check_launch(num_processes: int) -> None:
    """Refuse (one line) a launch whose processes did not become one group of ``WORLD_SIZE`` processes."""
    raw = os.environ.get("WORLD_SIZE")
    try:
        world = int(raw) if raw is not None else 1
    except ValueError:
        return
    if world > 1 and num_processes != world:
        raise LaunchError(f"The launcher started {world} processes (WORLD_SIZE={world}) but this one joined a group "
                          f"of {num_processes}; ssl_zoo serves `accelerate launch` and `torchrun` (on a CPU machine "
                          f"set ACCELERATE_USE_CPU=1 for gloo), or one process without a launcher.")


def is_collective_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is torch.distributed giving up on a peer: gloo raises ``RuntimeError('... Timed out
    waiting 5000ms for recv operation ...')`` and then 'Application timeout caused pair closure' on the
    next call; NCCL's errors say 'timeout' / 'Watchdog'."""
    # Only torch's own errors: a subclass (ssl_zoo's NonFiniteLossError, a user's error) mentioning a
    # timeout is something else.
    torch_error = type(exc) is RuntimeError or isinstance(exc, getattr(dist, "DistError", ()))
    if not torch_error or not is_distributed():
        return False
    text = str(exc).lower()
    return "timed out" in text or "timeout" in text


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from every process along dim 0, keeping the autograd graph.

    torch.distributed.nn's all_gather sums the incoming gradients over processes in backward, so a loss
    computed identically on every process from the gathered tensor gets the right gradient once DDP
    averages (the SimCLR global-batch NT-Xent). A no-op in one process.
    """
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)
