"""Optimiser and learning-rate schedule of a training run, built from the recipe's ``TrainCfg``.

Learning rate: ``lr = base_lr * global_batch / lr_batch_denom`` (:func:`scaled_lr`). Cosine schedule with
linear warm-up, stepped once per optimiser step; ``fix_lr`` parameter groups (e.g. SimSiam's predictor) keep
the scaled lr. Weight decay reaches every parameter (official MoCo / SimSiam); ``decay_norm_and_bias=False``
exempts norm weights and biases (``ndim <= 1``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from .recipe import Recipe

OPTIMIZERS = ("sgd", "lars", "adamw", "adam")
SCHEDULES = ("cosine", "constant")


def scaled_lr(base_lr: float, global_batch: int, lr_batch_denom: int) -> float:
    """The linear scaling rule: ``base_lr * global_batch / lr_batch_denom``."""
    if global_batch < 1 or lr_batch_denom < 1:
        raise ValueError(f"global batch ({global_batch}) and lr_batch_denom ({lr_batch_denom}) must be >= 1.")
    return base_lr * global_batch / lr_batch_denom


def build_param_groups(method: nn.Module, lr: float, weight_decay: float,
                       decay_norm_and_bias: bool = True) -> list[dict[str, Any]]:
    """The method's groups with their lr and weight decay.

    ``decay_norm_and_bias=False`` splits each group into decayed weights and undecayed norm/bias
    (ndim <= 1) tensors; by default every parameter is decayed, as the official code does.
    """
    groups = cast(Any, method).parameter_groups() if hasattr(method, "parameter_groups") else [
        {"name": "all", "params": [p for p in method.parameters() if p.requires_grad], "fix_lr": False}]
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for i, group in enumerate(groups):
        params = [p for p in group["params"] if p.requires_grad]
        dup = [p for p in params if id(p) in seen]
        if dup:
            raise ValueError(f"parameter_groups() lists {len(dup)} parameter(s) in more than one group.")
        seen.update(id(p) for p in params)
        name = str(group.get("name", f"group{i}"))
        fix_lr = bool(group.get("fix_lr", False))
        group_lr = float(group.get("lr", lr))
        if decay_norm_and_bias:
            split = [("", params, weight_decay)]
        else:
            split = [(".decay", [p for p in params if p.ndim > 1], weight_decay),
                     (".no_decay", [p for p in params if p.ndim <= 1], 0.0)]
        for suffix, ps, wd in split:
            if ps:
                out.append({"params": ps, "lr": group_lr, "weight_decay": wd, "name": name + suffix,
                            "fix_lr": fix_lr})
    if not out:
        raise ValueError("The method has no trainable parameters.")
    return out


def build_optimizer(param_groups: list[dict[str, Any]], recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimiser (``train.optimizer``: one of :data:`OPTIMIZERS`) over ``param_groups``."""
    cfg = recipe.train
    name = cfg.optimizer.lower()
    if name == "sgd":
        # foreach: one kernel per parameter group instead of one per tensor (same arithmetic)
        return torch.optim.SGD(param_groups, lr=param_groups[0]["lr"], momentum=cfg.sgd_momentum, foreach=True)
    if name == "lars":  # SimCLR's optimiser: timm's LARS (trust-ratio scaled SGD with momentum)
        from timm.optim import Lars

        return Lars(param_groups, lr=param_groups[0]["lr"], momentum=cfg.sgd_momentum)
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=param_groups[0]["lr"])
    if name == "adam":
        return torch.optim.Adam(param_groups, lr=param_groups[0]["lr"])
    raise ValueError(f"Unknown optimizer {cfg.optimizer!r} in recipe {recipe.name!r}; use one of {OPTIMIZERS}.")


@dataclass
class WarmupCosine:
    """lr factor: linear warm-up over ``warmup_steps``, then cosine from 1 to ``min_ratio`` at ``total_steps``.

    A callable object (not a lambda) so LambdaLR's state_dict records its parameters.
    """

    warmup_steps: int
    total_steps: int
    min_ratio: float = 0.0
    cosine: bool = True

    def __call__(self, step: int) -> float:
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if not self.cosine:
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass
class ConstantFactor:
    """lr factor 1 for ``fix_lr`` groups."""

    def __call__(self, step: int) -> float:
        return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-group lr factors: :class:`WarmupCosine` (or constant after warm-up), :class:`ConstantFactor` for
    ``fix_lr``."""
    cfg = recipe.train
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {cfg.schedule!r} in recipe {recipe.name!r}; use one of {SCHEDULES}.")
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    factors: list[Callable[[int], float]] = []
    for group in optimizer.param_groups:
        if group.get("fix_lr"):
            factors.append(ConstantFactor())
        else:
            min_ratio = cfg.min_lr / group["lr"] if group["lr"] > 0 else 0.0
            factors.append(WarmupCosine(warmup, total_steps, min_ratio, cosine=cfg.schedule == "cosine"))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def extend_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, total_steps: int) -> None:
    """LambdaLR restores its factors' fields from the checkpoint; a run resumed with more epochs or
    --max-steps continues on the cosine of the new length (see docs/training.md)."""
    for factor in scheduler.lr_lambdas:
        if isinstance(factor, WarmupCosine):
            factor.total_steps = total_steps


__all__ = ["OPTIMIZERS", "SCHEDULES", "scaled_lr", "build_param_groups", "build_optimizer", "WarmupCosine",
           "ConstantFactor", "build_scheduler", "extend_schedule"]
