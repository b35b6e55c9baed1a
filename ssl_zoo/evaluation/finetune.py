"""Fine-tuning the whole encoder plus a linear head: semi-supervised (label fractions) and transfer.

Semi-supervised protocol (LeOCLR Sec. 4 Table 2 and Sec. 5 Fig. 5, which follow SimCLR, Chen et al.
2020, Appendix B.5): the pre-trained encoder and a new linear head are trained together on 1%, 2%,
5%, 10%, 20%, 50% or 100% of the labelled training images, SGD with Nesterov momentum 0.9,
lr 0.05 x batch / 256, no weight decay, only RandomResizedCrop + horizontal flip as augmentation,
60 epochs for 1% of the labels and 30 for 10% (LeOCLR Sec. 4). The lr decays with a cosine schedule
and no warm-up (the SimCLR code's schedule; the paper text names none). Top-1 / top-5 of the
**last epoch** on the test split.

Transfer protocol (LeOCLR Table 3, "as in [7, 16]": SimCLR Appendix B.8 / BYOL): fine-tune on the
target dataset for each (lr, weight decay) cell of a grid, score each cell on a seeded,
class-balanced held-out part of the training split, retrain the best cell on the whole training
split and report test accuracy.

Distributed: ``cfg.batch_size`` is the **global** batch. Every process draws the same permutation
per (seed, epoch), takes its share of each global batch, and each image's augmentation is seeded by
(seed, epoch, index), so the images, the crops and (with SyncBatchNorm, on by default when several
processes run) the BatchNorm statistics are those of a single process with the whole batch; the
loss is the sum over the global batch divided by its size. 1 and N processes then give the same
numbers up to floating-point summation order. Accuracies are fractions in [0, 1].
"""
from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .features import _as_features, _split_batch, extract_features
from .linear import (
    _feature_dim,
    dataset_num_classes,
    make_classifier,
    mean_over_processes,
    optimizer_step,
    settings_with,
)
from .metrics import topk_accuracy

if TYPE_CHECKING:
    from accelerate import Accelerator

# LeOCLR Sec. 4: "we fine-tune the network with 60 epochs using 1% labeled data and 30 epochs using 10%".
PAPER_EPOCHS = {0.01: 60, 0.1: 30}
LABEL_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # LeOCLR Fig. 5


def default_epochs(label_fraction: float) -> int:
    """Epochs for a label fraction: 60 up to 1% of the labels, 30 above (the paper gives 1% and 10%;
    the other fractions of Fig. 5 take the setting of the nearest of the two, a project choice)."""
    if not 0.0 < label_fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction}.")
    return PAPER_EPOCHS[0.01] if label_fraction <= 0.01 + 1e-9 else PAPER_EPOCHS[0.1]


@dataclass(frozen=True)
class FinetuneCfg:
    """Optimiser and schedule of a fine-tune (SimCLR Appendix B.5 defaults)."""

    epochs: int = 30
    lr: float | None = None  # None: base_lr * batch_size / 256
    base_lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    batch_size: int = 256  # global, over all processes
    schedule: str = "cosine"  # or "constant"
    init_std: float = 0.01
    sync_bn: bool = True  # only used with several processes
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}.")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}.")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}.")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else self.base_lr * self.batch_size / 256

    def lr_at(self, step: int, total_steps: int) -> float:
        """Cosine decay from ``peak_lr`` to 0 over ``total_steps`` (no warm-up), or constant."""
        if self.schedule == "constant" or total_steps <= 0:
            return self.peak_lr
        return 0.5 * self.peak_lr * (1.0 + math.cos(math.pi * step / total_steps))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "peak_lr": self.peak_lr}


class EncoderWithHead(nn.Module):
    """``fc(encoder(x))``: the fine-tuned network (pooled features -> linear head)."""

    def __init__(self, encoder: nn.Module, fc: nn.Linear) -> None:
        super().__init__()
        self.encoder, self.fc = encoder, fc

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(_as_features(self.encoder(x)))


# ------------------------------------------------------------------------------------------- data
def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The RNG seed of one image's augmentation: a function of (seed, epoch, index) only."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0] % (2**63))


class SeededTransformDataset(Dataset):
    """Wraps a dataset so that item ``i`` is drawn with torch's RNG seeded by ``(seed, epoch, i)``.

    The dataset's own ``transform`` (torchvision v2, which draws from torch's global RNG) then
    gives each image the same crop whichever process or DataLoader worker loads it.
    """

    def __init__(self, dataset: Dataset, seed: int = 0, epoch: int = 0) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, epoch
        self.classes = getattr(dataset, "classes", None)
        self.targets = getattr(dataset, "targets", None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, int(index)))
            return self.dataset[index]


class GlobalBatchSampler(Sampler[list[int]]):
    """This process's share of each global batch of a (seed, epoch) permutation.

    Global batch ``b`` is ``perm[b * B:(b + 1) * B]`` whatever the number of processes; process
    ``rank`` takes its ``np.array_split`` part. A last batch smaller than the number of processes is
    dropped (some process would get no image).
    """

    def __init__(self, num_samples: int, global_batch: int, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0) -> None:
        if num_samples < num_replicas:
            raise ValueError(f"{num_samples} training images cannot be shared by {num_replicas} processes.")
        self.num_samples, self.global_batch = num_samples, min(global_batch, num_samples)
        self.seed, self.num_replicas, self.rank, self.epoch = seed, num_replicas, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_sizes(self) -> list[int]:
        """The size of every global batch of an epoch (the same on every process)."""
        sizes = [min(self.global_batch, self.num_samples - s) for s in range(0, self.num_samples, self.global_batch)]
        return [s for s in sizes if s >= self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.num_samples, generator=g).numpy()
        for start, size in zip(range(0, self.num_samples, self.global_batch), self.global_sizes()):
            part = np.array_split(perm[start:start + size], self.num_replicas)[self.rank]
            yield [int(i) for i in part]

    def __len__(self) -> int:
        return len(self.global_sizes())


def split_file_indices(dataset: Any, split_file: str | os.PathLike) -> list[int]:
    """Indices of the images a split file names (one file name per line, e.g. SimCLR's ImageNet
    ``1percent.txt`` / ``10percent.txt``: ``n01440764_10026.JPEG``). Names match the image files'
    base names; blank lines and ``#`` comments are skipped."""
    path = Path(split_file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist; pass a text file with one image file name "
                                f"per line.")
    paths = getattr(dataset, "paths", None)
    if paths is None:
        what = getattr(dataset, "name", "this dataset")
        raise ValueError(f"--split-file needs a dataset read from image files; {what!r} "
                         "holds its images in memory: use --label-fraction instead.")
    wanted = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not wanted:
        raise ValueError(f"split file {path} lists no image names.")
    by_name: dict[str, int] = {}
    for i, p in enumerate(paths):
        by_name.setdefault(os.path.basename(p), i)
    missing = [w for w in wanted if os.path.basename(w) not in by_name]
    if missing:
        raise ValueError(f"{len(missing)} of the {len(wanted)} names in {path} are not images of the "
                         f"{getattr(dataset, 'split', '?')!r} split (first: {', '.join(missing[:3])}); is it the "
                         "split file of this dataset?")
    return sorted({by_name[os.path.basename(w)] for w in wanted})


def holdout_indices(targets: Sequence[int], val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """``(train, val)`` indices: ``val_fraction`` of each class held out (at least one image per class,
    and at least one left for training), seeded."""
    from ..data import label_fraction_indices

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    t = np.asarray(targets, dtype=np.int64)
    counts = np.bincount(t)
    small = [c for c in np.flatnonzero(counts) if counts[c] < 2]
    if small:
        raise ValueError(f"class(es) {small[:5]} have fewer than 2 training images; a held-out validation part "
                         "needs at least 2 per class.")
    val = set(label_fraction_indices(t, val_fraction, seed=seed + 1))
    train = [i for i in range(len(t)) if i not in val]
    if len(set(t[train].tolist())) != len(set(t.tolist())):  # a class left with no training image
        raise ValueError("the held-out part took every image of some class; lower --val-fraction.")
    return train, sorted(val)


# --------------------------------------------------------------------------------------- training
def finetune(encoder: nn.Module, train_dataset: Dataset, test_dataset: Dataset | None = None,
             cfg: FinetuneCfg | None = None, num_classes: int | None = None, num_workers: int = 0,
             accelerator: Accelerator | None = None, device: torch.device | str | None = None,
             log: Callable[[str], None] | None = None, log_every: int = 1, return_model: bool = False,
             **overrides: Any) -> dict[str, Any]:
    """Fine-tune a copy of ``encoder`` plus a new linear head on ``train_dataset`` (with its train
    transform) and evaluate on ``test_dataset`` (eval transform).

    ``encoder`` itself is left untouched. Returns ``{"top1", "top5", "train_loss", "num_classes",
    "epochs", "steps"}`` (fractions, last epoch; no test metrics when ``test_dataset`` is None) and,
    with ``return_model=True``, ``"model"``: the fine-tuned :class:`EncoderWithHead` (eval mode, plain
    module, SyncBatchNorm layers included when several processes ran).
    """
    cfg = _cfg(cfg, overrides)
    if num_classes is None:
        num_classes = dataset_num_classes(train_dataset)
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    if accelerator is not None:
        device = accelerator.device
    device = torch.device(device) if device is not None else torch.device("cpu")
    net = copy.deepcopy(encoder).to(device)
    torch.manual_seed(cfg.seed)  # the same head on every process
    fc = make_classifier(_feature_dim(net, _unseeded(train_dataset), device), num_classes, cfg.init_std)
    model: nn.Module = EncoderWithHead(net, fc).to(device).train().requires_grad_(True)
    if world > 1 and cfg.sync_bn:
        from ..batchnorm import convert_sync_batchnorm

        model = convert_sync_batchnorm(model, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.peak_lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                weight_decay=cfg.weight_decay)
    data = train_dataset if isinstance(train_dataset, SeededTransformDataset) else \
        SeededTransformDataset(train_dataset, seed=cfg.seed)
    sampler = GlobalBatchSampler(len(data), cfg.batch_size, cfg.seed, world, rank)
    loader = DataLoader(data, batch_sampler=sampler, num_workers=num_workers, pin_memory=torch.cuda.is_available())
    if accelerator is not None:
        model, optimizer = accelerator.prepare(model, optimizer)
    sizes = sampler.global_sizes()
    total_steps, step, train_loss = cfg.epochs * len(sizes), 0, float("nan")
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        data.set_epoch(epoch)
        model.train()
        loss_sum, count = torch.zeros((), device=device), torch.zeros((), device=device)
        for batch, global_size in zip(loader, sizes):
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr_at(step, total_steps)
            images, labels = _split_batch(batch)
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True).long()
            ce = F.cross_entropy(model(images), labels, reduction="sum")
            # DDP averages gradients over processes: sum / global batch, times world, is the 1-process mean.
            optimizer_step(ce * (world / global_size), optimizer, accelerator)
            loss_sum += ce.detach()
            count += labels.numel()
            step += 1
        train_loss = mean_over_processes(loss_sum, count, accelerator)
        if log is not None and ((epoch + 1) % max(1, log_every) == 0 or epoch + 1 == cfg.epochs):
            log(f"epoch {epoch + 1}/{cfg.epochs} lr {cfg.lr_at(step, total_steps):.4g} train loss {train_loss:.4f}")
    net_out = accelerator.unwrap_model(model) if accelerator is not None else model
    net_out.eval()
    out: dict[str, Any] = {"train_loss": train_loss, "num_classes": num_classes, "epochs": cfg.epochs,
                           "steps": total_steps}
    if test_dataset is not None:
        out.update(evaluate_classifier(net_out, test_dataset, batch_size=cfg.batch_size, num_workers=num_workers,
                                       accelerator=accelerator, device=device))
    if return_model:
        out["model"] = net_out
    return out


def evaluate_classifier(model: nn.Module, dataset: Dataset, batch_size: int = 256, num_workers: int = 0,
                        accelerator: Accelerator | None = None, device: torch.device | str | None = None
                        ) -> dict[str, float]:
    """Top-1 / top-5 (fractions; top-5 is top-min(5, C)) of a classifier returning logits, in eval mode.
    Under several processes the logits are gathered without padding; every process gets the numbers."""
    world = accelerator.num_processes if accelerator is not None else 1
    logits, labels = extract_features(model, dataset, batch_size=max(1, batch_size // world),
                                      num_workers=num_workers, accelerator=accelerator, device=device)
    acc = topk_accuracy(logits, labels, ks=(1, 5))
    return {"top1": acc[1], "top5": acc[5]}


# --------------------------------------------------------------------------------------- transfer
@dataclass(frozen=True)
class GridCell:
    """One (lr, weight decay) point of the transfer grid and its held-out score."""

    lr: float
    weight_decay: float


def select_best(scores: Sequence[tuple[GridCell, float]]) -> GridCell:
    """The cell with the highest validation score; ties go to the earliest cell in grid order."""
    if not scores:
        raise ValueError("the hyper-parameter grid is empty.")
    best_cell, best = scores[0]
    for cell, score in scores[1:]:
        if score > best:
            best_cell, best = cell, score
    return best_cell


def grid_search(lrs: Sequence[float], weight_decays: Sequence[float],
                score: Callable[[GridCell], float]) -> tuple[GridCell, list[tuple[GridCell, float]]]:
    """Score every (lr, weight decay) cell (lr-major order) and return ``(best cell, [(cell, score)])``."""
    if not lrs or not weight_decays:
        raise ValueError("the grid needs at least one lr and one weight decay.")
    scores = [(cell, float(score(cell))) for cell in (GridCell(lr, wd) for lr in lrs for wd in weight_decays)]
    return select_best(scores), scores


def transfer_finetune(encoder: nn.Module, train_dataset: Dataset, train_eval_dataset: Dataset,
                      test_dataset: Dataset, lrs: Sequence[float], weight_decays: Sequence[float],
                      cfg: FinetuneCfg | None = None, val_fraction: float = 0.2, num_classes: int | None = None,
                      num_workers: int = 0, accelerator: Accelerator | None = None,
                      log: Callable[[str], None] | None = None, **overrides: Any) -> dict[str, Any]:
    """Grid search on a held-out part of the training split, then retrain on all of it and test.

    ``train_dataset`` and ``train_eval_dataset`` are the same training split with the train and the
    eval transform. ``val_fraction`` of each class (seeded by ``cfg.seed``) is held out and scored
    (top-1) with the eval transform. Returns ``{"top1", "top5", "train_loss", "selected": {"lr",
    "weight_decay"}, "grid": [{"lr", "weight_decay", "val_top1"}], "num_train", "num_val"}``.
    """
    cfg = _cfg(cfg, overrides)
    if num_classes is None:
        num_classes = dataset_num_classes(train_dataset)
    train_idx, val_idx = holdout_indices(train_dataset.targets, val_fraction, cfg.seed)  # type: ignore[attr-defined]
    part_train = train_dataset.subset(train_idx)  # type: ignore[attr-defined]
    part_val = train_eval_dataset.subset(val_idx)  # type: ignore[attr-defined]

    def score(cell: GridCell) -> float:
        out = finetune(encoder, part_train, part_val, cfg, num_classes=num_classes, num_workers=num_workers,
                       accelerator=accelerator, lr=cell.lr, weight_decay=cell.weight_decay)
        if log is not None:
            log(f"grid lr {cell.lr:g} wd {cell.weight_decay:g}: val top-1 {100 * out['top1']:.2f}")
        return out["top1"]

    best, scores = grid_search(lrs, weight_decays, score)
    final = finetune(encoder, train_dataset, test_dataset, cfg, num_classes=num_classes, num_workers=num_workers,
                     accelerator=accelerator, lr=best.lr, weight_decay=best.weight_decay)
    return {"top1": final["top1"], "top5": final["top5"], "train_loss": final["train_loss"],
            "num_classes": num_classes, "selected": {"lr": best.lr, "weight_decay": best.weight_decay},
            "grid": [{"lr": c.lr, "weight_decay": c.weight_decay, "val_top1": s} for c, s in scores],
            "num_train": len(train_idx), "num_val": len(val_idx)}


def _unseeded(dataset: Dataset) -> Dataset:
    return dataset.dataset if isinstance(dataset, SeededTransformDataset) else dataset


def _cfg(cfg: FinetuneCfg | None, overrides: dict[str, Any]) -> FinetuneCfg:
    return settings_with(FinetuneCfg, cfg, overrides, "fine-tuning")
