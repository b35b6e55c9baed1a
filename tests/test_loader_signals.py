"""Training-loader workers and stop signals: a worker is never killed by a SIGINT/SIGTERM sent to the process
group, not even one that arrives while it is starting (before its init function runs)."""
from __future__ import annotations

import signal

import pytest
import torch
from torch.utils.data import Dataset

from ssl_zoo.data import loader

pytestmark = pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")


class _SignalState(Dataset):
    """Each item: (SIGTERM blocked?, SIGINT blocked?, SIGTERM ignored?) as seen inside the worker."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        return torch.tensor([signal.SIGTERM in blocked, signal.SIGINT in blocked,
                             signal.getsignal(signal.SIGTERM) == signal.SIG_IGN])


def test_workers_are_born_with_stop_signals_blocked_then_ignore_them(monkeypatch, tmp_path) -> None:
    born_with = tmp_path / "mask_at_birth.txt"
    original = loader.init_worker

    def recording_init(worker_id: int) -> None:  # what the worker's mask was before init_worker ran
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        with open(born_with, "a") as f:
            f.write(f"{int(signal.SIGTERM in blocked)}{int(signal.SIGINT in blocked)}\n")
        original(worker_id)

    monkeypatch.setattr(loader, "init_worker", recording_init)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    train_loader = loader.build_train_loader(_SignalState(), batch_size=1, num_workers=2, persistent_workers=False)
    states = torch.cat(list(train_loader))
    assert born_with.read_text().split() == ["11", "11"]  # both workers started with SIGTERM and SIGINT blocked
    # afterwards each worker ignores them, unblocked (a pending one is dropped, never delivered as a kill) ...
    assert states.tolist() == [[False, False, True]] * 4
    # ... and the main process's mask is what it was, so its own stop handler still runs
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
