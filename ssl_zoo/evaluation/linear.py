"""Linear probe (MoCo protocol): a linear classifier trained on a frozen encoder.

Defaults follow the official MoCo ``main_lincls.py``: encoder frozen in eval mode
(BatchNorm statistics untouched), ``fc`` weights ~ N(0, 0.01) and bias 0, SGD
lr 30, momentum 0.9, weight decay 0, 100 epochs, lr x0.1 at epochs 60 and 80,
global batch 256. The reported accuracy is the **last epoch's**, never the best.
Accuracies are fractions in [0, 1].
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from .features import _as_features, _split_batch, extract_features, make_loader
from .metrics import topk_accuracy

if TYPE_CHECKING:
    from accelerate import Accelerator


@dataclass(frozen=True)
class LinearProbeCfg:
    """The optimiser schedule of the probe (shared by the image and the cached-feature modes)."""

    epochs: int = 100
    lr: float = 30.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = (60, 80)
    gamma: float = 0.1
    batch_size: int = 256  # global, over all processes
    init_std: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}.")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {self.milestones}.")

    def lr_at(self, epoch: int) -> float:
        """Step schedule: ``lr * gamma ** (number of milestones <= epoch)`` (epochs count from 0)."""
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "milestones": list(self.milestones)}


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, accelerator: Any | None) -> None:
    """zero_grad, backward (through Accelerate when given: DDP, mixed precision), step."""
    optimizer.zero_grad(set_to_none=True)
    if accelerator is not None:
        accelerator.backward(loss)
    else:
        loss.backward()
    optimizer.step()


def mean_over_processes(total: torch.Tensor, count: torch.Tensor, accelerator: Any | None) -> float:
    """``total / count`` summed over every process."""
    if accelerator is not None:
        total, count = accelerator.reduce(total, "sum"), accelerator.reduce(count, "sum")
    return (total / count.clamp_min(1)).item()


def make_classifier(num_features: int, num_classes: int, init_std: float = 0.01) -> nn.Linear:
    """``nn.Linear`` initialised as in MoCo's linear evaluation: N(0, init_std) weights, zero bias."""
    fc = nn.Linear(num_features, num_classes)
    nn.init.normal_(fc.weight, mean=0.0, std=init_std)
    nn.init.zeros_(fc.bias)
    return fc


def _num_classes(*label_sets: Tensor) -> int:
    return int(max(int(labels.max()) for labels in label_sets)) + 1


@torch.no_grad()
def _evaluate_logits(logits: Tensor, labels: Tensor) -> dict[str, float]:
    acc = topk_accuracy(logits, labels, ks=(1, 5))
    return {"top1": acc[1], "top5": acc[5]}


def linear_probe_on_features(train_features: Tensor, train_labels: Tensor, test_features: Tensor,
                             test_labels: Tensor, cfg: LinearProbeCfg | None = None, num_classes: int | None = None,
                             device: torch.device | str | None = None,
                             log: Callable[[str], None] | None = None, log_every: int = 1,
                             return_classifier: bool = False, **overrides: Any) -> dict[str, Any]:
    """Train the linear classifier on fixed (cached) features with the probe's SGD schedule.

    ``overrides`` are ``LinearProbeCfg`` fields (``epochs=``, ``lr=``, ...). Features are used
    as given (no normalisation, as in the MoCo protocol). Returns ``{"top1", "top5"}`` (fractions,
    last epoch; top-5 is top-min(5, C)), ``"train_loss"`` of the last epoch and ``"num_classes"``;
    with ``return_classifier=True`` also ``"classifier"``, the trained ``nn.Linear``.
    """
    cfg = _cfg(cfg, overrides)
    if train_features.ndim != 2 or test_features.ndim != 2 or train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D; got {tuple(train_features.shape)} and "
                         f"{tuple(test_features.shape)}.")
    if train_labels.shape[0] != train_features.shape[0] or test_labels.shape[0] != test_features.shape[0]:
        raise ValueError("there must be one label per feature row.")
    num_classes = num_classes or _num_classes(train_labels, test_labels)
    device = torch.device(device) if device is not None else train_features.device
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    fc = make_classifier(train_features.shape[1], num_classes, cfg.init_std).to(device)
    optimizer = torch.optim.SGD(fc.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    x, y = train_features.to(device).float(), train_labels.to(device).long()
    n = x.shape[0]
    loss_sum = 0.0
    losses: list[float] = []
    for epoch in range(cfg.epochs):
        _set_lr(optimizer, cfg.lr_at(epoch))
        order = torch.randperm(n, generator=generator).to(device)
        loss_sum = 0.0
        for start in range(0, n, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            loss = F.cross_entropy(fc(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * idx.numel()
        losses.append(loss_sum / n)
        _log(log, log_every, epoch, cfg, loss_sum / n)
    _warn_if_diverging(losses, num_classes, cfg.lr, float(x.pow(2).sum(dim=1).mean()), log)
    with torch.no_grad():
        logits = fc(test_features.to(device).float())
    out = {**_evaluate_logits(logits.cpu(), test_labels.cpu()), "train_loss": loss_sum / n,
           "num_classes": num_classes}
    return {**out, "classifier": fc} if return_classifier else out


def linear_probe(encoder: nn.Module, train_dataset: Dataset, test_dataset: Dataset, cfg: LinearProbeCfg | None = None,
                 num_classes: int | None = None, num_workers: int = 0, accelerator: Accelerator | None = None,
                 device: torch.device | str | None = None, log: Callable[[str], None] | None = None,
                 log_every: int = 1, return_classifier: bool = False, **overrides: Any) -> dict[str, Any]:
    """Linear probe on images: the frozen encoder runs every step on the (augmented) train images.

    ``train_dataset`` carries the train transform (RandomResizedCrop + flip), ``test_dataset``
    the eval transform. With a multi-process ``accelerator`` the classifier is trained
    data-parallel (``cfg.batch_size`` is the global batch) and test logits are gathered
    without padding, so every process returns the same numbers. Returns
    ``{"top1", "top5", "train_loss", "num_classes"}`` (fractions, last epoch), plus ``"classifier"``
    (the trained ``nn.Linear``, unwrapped) with ``return_classifier=True``.
    """
    cfg = _cfg(cfg, overrides)
    if num_classes is None:
        num_classes = dataset_num_classes(train_dataset)
    world = accelerator.num_processes if accelerator is not None else 1
    if cfg.batch_size % world:
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by the {world} processes; the batch size "
                         f"is global, pick a multiple of the process count.")
    if accelerator is not None:
        device = accelerator.device
    device = torch.device(device) if device is not None else torch.device("cpu")
    encoder.eval().requires_grad_(False).to(device)
    torch.manual_seed(cfg.seed)
    fc = make_classifier(_feature_dim(encoder, train_dataset, device), num_classes, cfg.init_std).to(device)
    optimizer = torch.optim.SGD(fc.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loader = make_loader(train_dataset, batch_size=cfg.batch_size // world, num_workers=num_workers, shuffle=True,
                         seed=cfg.seed)
    if accelerator is not None:
        fc, optimizer, loader = accelerator.prepare(fc, optimizer, loader)
    train_loss = float("nan")
    losses: list[float] = []
    sq_norm_sum, sq_norm_count = 0.0, 0  # the features' mean squared norm (first epoch, this process)
    for epoch in range(cfg.epochs):
        _set_lr(optimizer, cfg.lr_at(epoch))
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        fc.train()
        loss_sum, count = torch.zeros((), device=device), torch.zeros((), device=device)
        for batch in loader:
            images, labels = _split_batch(batch)
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True).long()
            with torch.no_grad():
                features = _as_features(encoder(images))
                if epoch == 0:
                    sq_norm_sum += float(features.float().pow(2).sum())
                    sq_norm_count += features.shape[0]
            loss = F.cross_entropy(fc(features.float()), labels)
            optimizer_step(loss, optimizer, accelerator)
            loss_sum += loss.detach() * labels.numel()
            count += labels.numel()
        train_loss = mean_over_processes(loss_sum, count, accelerator)
        losses.append(train_loss)
        _log(log, log_every, epoch, cfg, train_loss)
    if accelerator is None or accelerator.is_main_process:  # said once
        _warn_if_diverging(losses, num_classes, cfg.lr, sq_norm_sum / max(sq_norm_count, 1), log)
    head = accelerator.unwrap_model(fc) if accelerator is not None else fc
    logits, labels = extract_features(nn.Sequential(encoder, head), test_dataset, batch_size=cfg.batch_size // world,
                                      num_workers=num_workers, accelerator=accelerator, device=device)
    out = {**_evaluate_logits(logits, labels), "train_loss": train_loss, "num_classes": num_classes}
    return {**out, "classifier": head} if return_classifier else out


def dataset_num_classes(dataset: Any) -> int:
    """Class count from ``dataset.classes`` (or the largest of ``dataset.targets`` + 1)."""
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        return len(classes)
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets):
        return int(max(int(t) for t in targets)) + 1
    raise ValueError(f"cannot tell the number of classes of {type(dataset).__name__} (no .classes or .targets); "
                     "pass num_classes=.")


def _feature_dim(encoder: nn.Module, dataset: Dataset, device: torch.device) -> int:
    dim = getattr(encoder, "num_features", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    image, _ = _split_batch(dataset[0])
    with torch.no_grad():
        return _as_features(encoder(image[None].to(device))).shape[1]


def _log(log: Callable[[str], None] | None, every: int, epoch: int, cfg: LinearProbeCfg, loss: float) -> None:
    if log is not None and ((epoch + 1) % max(1, every) == 0 or epoch + 1 == cfg.epochs):
        log(f"epoch {epoch + 1}/{cfg.epochs} lr {cfg.lr_at(epoch):.4g} train loss {loss:.4f}")


# A loss above this many times chance level (ln C) has exploded: the classifier starts at about ln C.
EXPLODED_FACTOR = 10.0
# lr x mean squared feature norm is the size of one SGD step in logit units; about 5 trains smoothly.
STABLE_STEP = 5.0


def divergence_warning(losses: Sequence[float], num_classes: int, lr: float, mean_sq_norm: float) -> str | None:
    """One line when the probe's per-epoch train loss exploded (above 10 x ln C) or ended above where it began,
    naming the likely cause: an lr too large for the features' scale (the MoCo protocol's lr 30 assumes small
    features; the probe uses them unnormalised). None when the loss behaved."""
    if not losses:
        return None
    chance = math.log(max(num_classes, 2))
    exploded = not all(math.isfinite(v) for v in losses) or max(losses) > EXPLODED_FACTOR * chance
    rose = len(losses) > 1 and losses[-1] > 1.01 * losses[0]
    if not (exploded or rose):
        return None
    step = lr * mean_sq_norm
    suggest = f"{STABLE_STEP / mean_sq_norm:.1g}" if mean_sq_norm > 0 else "a smaller value"
    def loss(v: float) -> str:
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"

    return (f"warning: the linear probe's train loss {'exploded' if exploded else 'rose'} (epoch 1 {loss(losses[0])}, "
            f"max {loss(max(losses))}, last {loss(losses[-1])}; chance level ln {num_classes} = {chance:.2f}): lr "
            f"{lr:g} is too large for these unnormalised features (mean squared norm {mean_sq_norm:.3g}, so one step "
            f"moves the logits by about lr x |x|^2 = {step:.3g}); try --lr {suggest}.")


def _warn_if_diverging(losses: Sequence[float], num_classes: int, lr: float, mean_sq_norm: float,
                       log: Callable[[str], None] | None) -> None:
    message = divergence_warning(losses, num_classes, lr, mean_sq_norm)
    if message is None:
        return
    if log is not None:
        log(message)
    else:
        warnings.warn(message.removeprefix("warning: "), RuntimeWarning, stacklevel=3)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def settings_with(cls: type, cfg: Any, overrides: dict[str, Any], what: str) -> Any:
    """``cfg`` (default ``cls()``) with ``overrides``; an unknown name is a TypeError listing the known ones."""
    cfg = cfg or cls()
    unknown = set(overrides) - set(cls.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown {what} settings {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}.")
    return cls(**{**asdict(cfg), **overrides}) if overrides else cfg


def _cfg(cfg: LinearProbeCfg | None, overrides: dict[str, Any]) -> LinearProbeCfg:
    if "milestones" in overrides:
        overrides = {**overrides, "milestones": tuple(overrides["milestones"])}
    return settings_with(LinearProbeCfg, cfg, overrides, "linear-probe")
