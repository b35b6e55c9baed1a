"""The training sampler: the same shuffled order for a (seed, epoch) on every process, sharded by whole batches."""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShardSampler(Sampler[int]):
    """Shuffled indices that depend only on (seed, epoch), sharded across processes.

    Every process draws the same permutation and takes every ``num_replicas``-th whole
    batch, so the processes see disjoint batches (like DistributedSampler). ``skip_batches``
    drops this process's first batches: an interrupted epoch resumes at the next unseen batch
    without loading (or augmenting) the skipped images.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.skip_batches = 0
        self.num_batches = self.batches_per_epoch()  # the loop may use fewer (whole accumulation cycles)

    def batches_per_epoch(self) -> int:
        return self.num_samples // (self.batch_size * self.num_replicas)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.num_samples, generator=g)
        n_batches = min(self.num_batches, self.batches_per_epoch())
        per_step = self.batch_size * self.num_replicas
        for b in range(self.skip_batches, n_batches):
            start = b * per_step + self.rank * self.batch_size
            yield from perm[start:start + self.batch_size].tolist()

    def __len__(self) -> int:
        return max(0, min(self.num_batches, self.batches_per_epoch()) - self.skip_batches) * self.batch_size
