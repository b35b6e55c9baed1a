"""The one training loop for every method, built on Accelerate.

It knows only the ``SSLMethod`` interface (``view_names``, ``forward(views)["loss"]``,
``after_optimizer_step(progress)``, ``parameter_groups()``), so MoCo v2, SimSiam,
LeOCLR, the synth add-on and any registered method train through it unchanged.

    ssl-zoo train moco_v2_r18_digits --epochs 2 --output runs/x
    accelerate launch -m ssl_zoo.train moco_v2_r18_digits --output runs/y

Batch: the recipe's ``batch_size`` (and ``--batch-size``) is the GLOBAL batch; each process
takes ``batch_size / (processes x grad_accum)`` images per micro-step (an error names the
numbers when that does not divide), so a paper recipe is the paper's experiment on 1, 2 or 8
processes. Learning rate: ``lr = base_lr * global_batch / lr_batch_denom``; ``--lr`` replaces
``base_lr`` (it is still scaled). Cosine schedule with linear warm-up, stepped once per
optimiser step; ``fix_lr`` parameter groups (e.g. SimSiam's predictor) keep the scaled lr.
Weight decay reaches every parameter (official MoCo / SimSiam); ``decay_norm_and_bias=False``
exempts norm weights and biases (``ndim <= 1``). ``sync_bn=True`` normalises BatchNorm over all
processes (``ssl_zoo.batchnorm``). Before training, the method's ``prepare_run`` may run stages
of its own (synth pre-trains its decoder into ``OUTPUT/decoder_pretrain``).

Output folder: ``checkpoint.pt`` (every epoch and on Ctrl-C / SIGTERM, atomic),
``log.jsonl`` (one JSON object per logged step and per epoch), and at the end the
exported encoder ``model.safetensors`` + ``config.json``. One run per folder: a folder that
holds a run is refused without ``--resume`` / ``--overwrite``, and a lock keeps a second
process out (``ssl_zoo.runfolder``).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .checkpoint import (CHECKPOINT_NAME, capture_rng_state, load_checkpoint, resolve_checkpoint_path,
                         restore_rng_state, save_checkpoint)
from .distributed import CollectiveTimeoutError, collective_timeout_seconds, is_collective_timeout
from .errors import SslZooError, UserInputError, one_line, report_user_error
from .export import NonFiniteWeightsError, describe_non_finite, non_finite_tensors
from .recipe import Recipe, get_recipe
from .runfolder import (RunFolderError, RunLock, check_run_folder, clean_stale_temp_files, hold_until_return,
                        remove_run_files, run_scope, trim_log)

LOG_NAME = "log.jsonl"
OPTIMIZERS = ("sgd", "lars", "adamw", "adam")
SCHEDULES = ("cosine", "constant")


class NonFiniteLossError(SslZooError, RuntimeError):
    """The loss became NaN/inf; the last good checkpoint on disk is kept."""

    exit_code = 1  # the run diverged or a peer stalled: not a wrong argument (docs/troubleshooting.md)


# -- recipe and hyperparameters ------------------------------------------------------------------

def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``["queue_size=4096", "crop_scale=(0.2, 1.0)", "init=None"]`` -> dict with Python literals."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r} (e.g. --set queue_size=4096).")
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()  # bare words are strings: --set arch=resnet50
        out[key.strip()] = value
    return out


def resolve_recipe(recipe: str | Recipe, *, epochs: int | None = None, batch_size: int | None = None,
                   lr: float | None = None, overrides: Mapping[str, Any] | None = None) -> Recipe:
    """The recipe with the command-line shortcuts and ``--set`` overrides applied."""
    base = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
    kw = dict(overrides or {})
    train_kw = dict(kw.pop("train", {}) or {})
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("base_lr", lr)):
        if value is not None:
            train_kw[key] = value
    if train_kw:
        kw["train"] = train_kw
    return base.with_overrides(**kw)


def scaled_lr(base_lr: float, global_batch: int, lr_batch_denom: int) -> float:
    """The linear scaling rule: ``base_lr * global_batch / lr_batch_denom``."""
    if global_batch < 1 or lr_batch_denom < 1:
        raise ValueError(f"global batch ({global_batch}) and lr_batch_denom ({lr_batch_denom}) must be >= 1.")
    return base_lr * global_batch / lr_batch_denom


def per_process_batch_size(global_batch: int, num_processes: int, grad_accum: int) -> int:
    """The images one process takes per micro-step for a global batch; an error when it does not divide."""
    parts = num_processes * grad_accum
    if global_batch < 1 or global_batch % parts:
        raise ValueError(f"The global batch {global_batch} cannot be split over {num_processes} process(es) x "
                         f"grad_accum {grad_accum} = {parts} equal parts. Choose a --batch-size that is a multiple "
                         f"of {parts}, or change the number of processes / --grad-accum.")
    return global_batch // parts


def build_param_groups(method: nn.Module, lr: float, weight_decay: float,
                       decay_norm_and_bias: bool = True) -> list[dict[str, Any]]:
    """The method's groups with their lr and weight decay.

    ``decay_norm_and_bias=False`` splits each group into decayed weights and undecayed norm/bias
    (ndim <= 1) tensors; by default every parameter is decayed, as the official code does.
    """
    groups = method.parameter_groups() if hasattr(method, "parameter_groups") else [
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
    cfg = recipe.train
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {cfg.schedule!r} in recipe {recipe.name!r}; use one of {SCHEDULES}.")
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    factors = []
    for group in optimizer.param_groups:
        if group.get("fix_lr"):
            factors.append(ConstantFactor())
        else:
            min_ratio = cfg.min_lr / group["lr"] if group["lr"] > 0 else 0.0
            factors.append(WarmupCosine(warmup, total_steps, min_ratio, cosine=cfg.schedule == "cosine"))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


# -- data -----------------------------------------------------------------------------------------

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


def open_train_dataset(recipe: Recipe, data: str | None, on_error: str = "raise") -> Dataset:
    """The recipe's training split without a transform (checks the folder layout; cheap)."""
    from .data import create_dataset

    return create_dataset(recipe.dataset, root=data, split=recipe.train_split, transform=None, on_error=on_error)


def check_trackers(log_with: str | Sequence[str] | None) -> None:
    """``--log-with`` names trackers whose packages are installed (the ssl_zoo extras install them)."""
    from accelerate.utils import imports

    names = [log_with] if isinstance(log_with, str) else list(log_with or [])
    for name in names:
        if name == "all":
            continue
        check = getattr(imports, f"is_{name}_available", None)
        if check is None:
            raise UserInputError(f"--log-with {name!r} is not a tracker Accelerate knows; use tensorboard, wandb, "
                                 f"mlflow, comet_ml, aim, clearml or dvclive.")
        if not check():
            extra = f"'ssl_zoo[{name}]'" if name in ("tensorboard", "wandb") else name
            raise UserInputError(f"--log-with {name}: the {name} package is not installed. Install it "
                                 f"(pip install {extra}) or drop --log-with.")


def build_dataset(recipe: Recipe, view_names: Sequence[str], data: str | None,
                  on_error: str = "raise") -> Dataset:
    """The recipe's training set, each item ``([view_1, ..., view_n], label)``.

    ``on_error="skip"`` replaces unreadable images (and counts them) instead of stopping the run.
    """
    from .data import create_dataset
    from .transforms import build_multiview_transform

    transform = build_multiview_transform(view_names, recipe.augment)
    return create_dataset(recipe.dataset, root=data, split=recipe.train_split, transform=transform,
                          on_error=on_error)


def build_loader(dataset: Dataset, batch_size: int, num_workers: int, sampler: EpochShardSampler,
                 generator: torch.Generator) -> DataLoader:
    from .data import build_train_loader

    # The loader has its own generator (reseeded per epoch), so drawing worker seeds never touches
    # the global RNG: a resumed run consumes exactly the random numbers of an uninterrupted one.
    # Workers are not persistent for the same reason: each epoch's workers start from that epoch's seed.
    return build_train_loader(dataset, batch_size, num_workers, sampler=sampler, generator=generator,
                              drop_last=True, persistent_workers=False)


# -- stopping on signals ----------------------------------------------------------------------------

class StopRequest:
    """Ctrl-C / SIGTERM set a flag; the loop checkpoints after the current optimiser step and stops.

    A second Ctrl-C raises KeyboardInterrupt at once (the last checkpoint on disk stays valid).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        with contextlib.suppress(ValueError):  # not the main thread: no handlers, Ctrl-C behaves as usual
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# -- run folder, diverged weights, stalled processes ------------------------------------------------

def _claim_run_folder(accelerator, out_dir: Path, resume: bool, overwrite: bool) -> None:
    """The main process locks ``out_dir`` until ``train`` returns, refuses a folder holding another run
    (unless resuming or overwriting), applies ``--overwrite`` and removes stale temp files. Every process
    raises the same :class:`RunFolderError` when that fails, so none waits for the others forever."""
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


def _stop_if_weights_non_finite(accelerator, module: nn.Module, step: int, ckpt_path: Path, lr_value: float) -> None:
    """Diverged parameters or buffers (a BatchNorm ``running_var`` of inf) stop the run like a NaN loss,
    before they reach a checkpoint or the export. Each process checks its own copy: BN statistics are
    per process."""
    bad = non_finite_tensors(module.state_dict())
    if _any_process(accelerator, bool(bad)):
        what = describe_non_finite(bad) if bad else "tensors on another process"
        raise NonFiniteWeightsError(
            f"Non-finite weights at step {step}: {what} hold NaN/inf. Training stopped; the last finite "
            f"checkpoint is kept at {ckpt_path} (if one was written). Lower the learning rate (now "
            f"{lr_value:.4g}) or use --mixed-precision no.")


def _collective_timeout_error(accelerator, timeout_s: float, ckpt_path: Path) -> CollectiveTimeoutError:
    return CollectiveTimeoutError(
        f"Process {accelerator.process_index} waited more than {timeout_s:g} s for the other processes in a "
        f"collective operation: one of them stalled or died (stopped, out of memory, a hung data loader or file "
        f"system). The run stopped; the last checkpoint at {ckpt_path} is kept, if one was written (continue "
        f"with --resume). If steps can legitimately take longer, raise --collective-timeout.")


def online_knn_datasets(recipe: Recipe, data: str | None) -> tuple[Dataset, Dataset]:
    """The labelled (bank, queries) pair for --knn-every: the recipe dataset's train and test splits, eval view."""
    from .data import create_dataset
    from .transforms import build_view_transform

    transform = build_view_transform("eval", recipe.augment)
    try:
        return tuple(create_dataset(recipe.dataset, root=data, split=split, transform=transform)  # type: ignore
                     for split in ("train", "test"))
    except (ValueError, FileNotFoundError) as exc:
        raise UserInputError(f"--knn-every needs labelled 'train' and 'test' splits of {recipe.dataset!r}: "
                             f"{one_line(exc)}") from None


def online_knn(encoder: nn.Module, sets: tuple[Dataset, Dataset], accelerator, log) -> dict[str, float]:
    """k-NN top-1 (k = 20, T = 0.07, as benchmarks/knn.py) of the current encoder, and the collapse monitor:
    the mean per-dimension std of the l2-normalised test features (about 1/sqrt(d) when healthy, SimSiam
    Fig. 2; warned about below a tenth of that)."""
    import torch.nn.functional as F

    from .evaluation import extract_features, knn_accuracy

    bank, queries = sets
    bank_x, bank_y = extract_features(encoder, bank, batch_size=256, accelerator=accelerator)
    test_x, test_y = extract_features(encoder, queries, batch_size=256, accelerator=accelerator)
    top1 = 100 * knn_accuracy(bank_x, bank_y, test_x, test_y, k=min(20, len(bank_x)), temperature=0.07,
                              num_classes=int(max(bank_y.max(), test_y.max())) + 1)
    std = float(F.normalize(test_x, dim=1).std(dim=0).mean())
    healthy = 1.0 / math.sqrt(test_x.shape[1])
    if std < 0.1 * healthy:
        log(f"warning: the features are collapsing: per-dimension std {std:.2e} of normalised features, "
            f"healthy is about {healthy:.2e} (1/sqrt(d)). Lower the lr or check the method's settings.")
    return {"knn_top1": top1, "feature_std": std}


def _run_warnings(recipe: Recipe, method: nn.Module, num_images: int, steps_per_epoch: int,
                  accelerator) -> list[str]:
    """Settings that run but rarely do what the user wants: said once on the console, never silently."""
    notes = []
    if steps_per_epoch < 4:
        notes.append(f"the training set ({num_images} images) gives only {steps_per_epoch} optimiser step(s) per "
                     f"epoch at global batch {recipe.train.batch_size}; lower --batch-size for a real run.")
    warmup_steps = recipe.train.warmup_epochs * steps_per_epoch
    if warmup_steps >= recipe.train.epochs * steps_per_epoch > 0:
        notes.append(f"warm-up ({recipe.train.warmup_epochs:g} epochs) covers the whole run "
                     f"({recipe.train.epochs} epochs): the lr never reaches its peak or decays.")
    if accelerator.device.type == "cpu" and accelerator.mixed_precision == "bf16":
        notes.append("bf16 on CPU: most CPUs emulate it (often slower than fp32) and it lowers precision; "
                     "use --mixed-precision no unless your CPU has native bf16.")
    notes += method.dataset_warnings(num_images) if hasattr(method, "dataset_warnings") else []
    return notes


def _length_given(epochs: int | None, overrides: Mapping[str, Any] | None) -> bool:
    """Whether the caller chose the number of epochs (``--epochs`` or ``--set epochs=N``)."""
    kw = dict(overrides or {})
    return epochs is not None or "epochs" in kw or "epochs" in dict(kw.get("train") or {})


def _extend_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, total_steps: int) -> None:
    """LambdaLR restores its factors' fields from the checkpoint; a run resumed with more epochs or
    --max-steps continues on the cosine of the new length (see docs/training.md)."""
    for factor in scheduler.lr_lambdas:
        if isinstance(factor, WarmupCosine):
            factor.total_steps = total_steps


# -- the loop ---------------------------------------------------------------------------------------

def _unwrap(accelerator, model: nn.Module) -> nn.Module:
    return accelerator.unwrap_model(model)


def _any_process(accelerator, flag: bool) -> bool:
    """True on every process if it is true on any (keeps processes in lock-step)."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0)


def _scalars(out: Mapping[str, Any]) -> dict[str, float]:
    """The method's logged parts as floats, in ONE device-to-host copy (one sync per step on a GPU)."""
    keys = [k for k, v in out.items() if isinstance(v, Tensor) and v.numel() >= 1]
    if not keys:
        return {}
    values = torch.stack([out[k].detach().float().mean() for k in keys]).tolist()
    return dict(zip(keys, values))


def default_mixed_precision(requested: str | None) -> str | None:
    """bf16 autocast by default on a bf16-capable GPU; a value from the caller, `accelerate launch
    --mixed_precision` or `accelerate config` wins. CPU runs stay fp32 unless asked."""
    import os

    if requested is not None or os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return requested
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return requested


@run_scope  # releases the run-folder lock however train() ends
def train(recipe_or_name: str | Recipe, *, data: str | None = None, epochs: int | None = None,
          batch_size: int | None = None, lr: float | None = None, output: str | Path | None = None,
          resume: bool | str | Path = False, mixed_precision: str | None = None, grad_accum: int = 1,
          seed: int = 0, num_workers: int | None = None, max_steps: int | None = None,
          log_with: str | Sequence[str] | None = None, overrides: Mapping[str, Any] | None = None,
          method: nn.Module | None = None, log_every: int = 10, dataset: Dataset | None = None,
          progress_bar: bool = True, on_error: str = "raise", overwrite: bool = False,
          collective_timeout: float | None = None, channels_last: bool | None = None,
          knn_every: int | None = None) -> dict[str, Any]:
    """Train a recipe (or a pre-built ``method``) and export its encoder; returns a summary dict.

    ``lr`` replaces the recipe's ``base_lr`` (still scaled by global batch / lr_batch_denom).
    ``max_steps`` caps the number of optimiser steps (the schedule then spans ``max_steps``).
    ``resume=True`` continues from ``output/checkpoint.pt``; a path resumes from that file/folder. Without
    ``epochs`` the resumed run keeps the checkpoint's epochs (and, without ``max_steps`` too, its total
    steps); given ``epochs`` / ``max_steps`` set a new length (extending a finished run).
    A folder that holds a run is refused unless ``resume`` or ``overwrite`` (which deletes that run's files);
    the folder is locked against other processes while ``train`` runs.
    ``collective_timeout`` (seconds; default ``$SSL_ZOO_COLLECTIVE_TIMEOUT`` or 1800) bounds how long a
    process waits for the others; then :class:`~ssl_zoo.distributed.CollectiveTimeoutError` is raised.
    ``dataset`` replaces the recipe's dataset (items ``(list_of_views, label)``).
    ``on_error="skip"`` replaces unreadable images (warned and counted) instead of stopping.
    Raises :class:`NonFiniteLossError` when the loss is NaN/inf and
    :class:`~ssl_zoo.export.NonFiniteWeightsError` when parameters or buffers are (checked at every
    checkpoint and before the export).
    """
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, set_seed

    recipe = resolve_recipe(recipe_or_name, epochs=epochs, batch_size=batch_size, lr=lr, overrides=overrides)
    if grad_accum < 1:
        raise ValueError(f"grad_accum must be >= 1, got {grad_accum}.")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}.")
    if log_every < 1:
        raise UserInputError(f"--log-every must be >= 1 (optimiser steps between log lines), got {log_every}.")
    check_trackers(log_with)
    if knn_every is not None and knn_every < 1:
        raise UserInputError(f"--knn-every must be >= 1 (epochs between k-NN evaluations), got {knn_every}.")
    out_dir = Path(output) if output is not None else Path("runs") / recipe.name
    ckpt_path = out_dir / CHECKPOINT_NAME
    # The embedded digits need no folder: a folder given to a digits recipe is a user's own images.
    folder_for_digits = data is not None and recipe.dataset == "digits" and dataset is None
    if folder_for_digits:
        recipe = recipe.with_overrides(dataset="imagefolder")
    # Local things first: a missing or malformed dataset folder fails before any download (timm init
    # weights) and before any stage runs. Views are attached once the method says which it needs.
    train_set = dataset if dataset is not None else open_train_dataset(recipe, data, on_error)
    if method is None:
        # Stages a method needs before training (synth: decoder pre-training), each resumable.
        from .methods import get_method_class
        stage_kwargs = dict(data=data, seed=seed, num_workers=num_workers, mixed_precision=mixed_precision,
                            grad_accum=grad_accum, progress_bar=progress_bar, on_error=on_error,
                            overwrite=overwrite, collective_timeout=collective_timeout)
        prepared, stage_stop = get_method_class(recipe.method).prepare_run(
            recipe, out_dir, resume=bool(resume), custom_dataset=dataset is not None, **stage_kwargs)
        if stage_stop is not None:  # a stage was interrupted: its own checkpoint holds the work
            return stage_stop
        if prepared != recipe and resume is True and not ckpt_path.is_file():
            resume = False  # the stages are done and main training has not started yet
        recipe = prepared
    timeout_s = collective_timeout_seconds(collective_timeout)
    mixed_precision = default_mixed_precision(mixed_precision)
    accelerator = Accelerator(mixed_precision=mixed_precision, log_with=log_with, project_dir=str(out_dir),
                              kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_s))])
    log = accelerator.print
    if folder_for_digits:
        log(f"--data {data}: recipe {recipe.name!r} trains on the embedded digits, so this folder is read as "
            f"'imagefolder' (one sub-folder of images per class).")
    _claim_run_folder(accelerator, out_dir, resume=bool(resume), overwrite=overwrite)

    resume_state = None
    if resume:
        source = ckpt_path if resume is True else Path(resume)
        resume_state = load_checkpoint(resolve_checkpoint_path(source))
        if not _length_given(epochs, overrides):
            # A plain --resume continues the run as planned; --epochs / --max-steps on resume set a new length.
            recipe = recipe.with_overrides(train={"epochs": Recipe.from_dict(resume_state["recipe"]).train.epochs})
            if max_steps is None:
                max_steps = resume_state["run"]["total_steps"]
        # Only the length may change on resume: a finished run can be extended with more epochs.
        stored = Recipe.from_dict(resume_state["recipe"]).with_overrides(train={"epochs": recipe.train.epochs})
        if stored != recipe:
            diff = _recipe_diff(stored.to_dict(), recipe.to_dict())
            raise ValueError(f"Cannot resume {source}: it was trained with a different recipe ({diff}). Pass the "
                             f"same recipe and options as the first run, or choose another --output.")
        log(f"Resuming from {source} at epoch {resume_state['epoch']}, step {resume_state['step']}.")

    world = accelerator.num_processes
    global_batch = recipe.train.batch_size
    per_process_batch = per_process_batch_size(global_batch, world, grad_accum)

    # Same seed everywhere for the model (identical initial weights on every process) ...
    set_seed(seed)
    if method is None:
        from .factory import create_method
        method = create_method(recipe)
    if recipe.train.sync_bn and world > 1:
        from .batchnorm import convert_sync_batchnorm
        method = convert_sync_batchnorm(method, accelerator.device)
    # ... then a per-process seed for augmentations and shuffle-BN permutations.
    set_seed(seed, device_specific=True)

    lr_value = scaled_lr(recipe.train.base_lr, global_batch, recipe.train.lr_batch_denom)

    if dataset is None:
        from .transforms import build_multiview_transform
        train_set.transform = build_multiview_transform(method.view_names, recipe.augment)
    sampler = EpochShardSampler(len(train_set), per_process_batch, seed, world, accelerator.process_index)
    steps_per_epoch = sampler.batches_per_epoch() // grad_accum
    # Whole accumulation cycles only: left-over micro-batches would leak gradients into the next epoch.
    sampler.num_batches = steps_per_epoch * grad_accum
    if steps_per_epoch < 1:
        raise ValueError(f"The training set has {len(train_set)} images, fewer than one optimiser step needs "
                         f"(global batch {global_batch} = {per_process_batch} x {world} processes x grad_accum "
                         f"{grad_accum}). Lower --batch-size.")
    online_sets = online_knn_datasets(recipe, data) if knn_every else None
    for note in _run_warnings(recipe, method, len(train_set), steps_per_epoch, accelerator):
        log(f"warning: {note}")
    total_steps = recipe.train.epochs * steps_per_epoch
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    workers = recipe.train.num_workers if num_workers is None else num_workers
    loader_gen = torch.Generator()
    loader = build_loader(train_set, per_process_batch, workers, sampler, loader_gen)

    groups = build_param_groups(method, lr_value, recipe.train.weight_decay, recipe.train.decay_norm_and_bias)
    optimizer = build_optimizer(groups, recipe)
    scheduler = build_scheduler(optimizer, recipe, total_steps, steps_per_epoch)
    # channels_last: faster convolutions on GPUs and, at >= 64 px, on CPUs (docs/results.md); default on CUDA.
    memory_format = (torch.channels_last if (accelerator.device.type == "cuda" if channels_last is None
                                             else channels_last) else torch.contiguous_format)
    method.to(memory_format=memory_format)
    model, optimizer = accelerator.prepare(method, optimizer)
    unwrapped = _unwrap(accelerator, model)

    run_info = {"global_batch": global_batch, "per_process_batch": per_process_batch, "num_processes": world,
                "grad_accum": grad_accum, "lr": lr_value,
                "total_steps": total_steps, "steps_per_epoch": steps_per_epoch,
                # the data a run trains on is part of the run: resuming on other images is refused
                "data": str(Path(data).resolve()) if data is not None else None, "num_images": len(train_set)}
    step, epoch, micro_done = 0, 0, 0
    if resume_state is not None:
        old = resume_state["run"]
        moved = {k: (old[k], run_info[k]) for k in ("data", "num_images") if k in old and old[k] != run_info[k]}
        if moved:
            raise UserInputError(f"Cannot resume: the first run trained on other data {moved} (old, new). Pass the "
                                 f"same --data as the first run, or start a new run in another --output.")
        changed = {k: (old.get(k), v) for k, v in run_info.items()
                   if old.get(k) != v and k not in ("total_steps", "data", "num_images")}
        if changed:
            raise ValueError(f"Cannot resume: the run geometry changed {changed} (old, new). Use the same global batch "
                             f"size, number of processes and --grad-accum as the first run.")
        if total_steps < resume_state["step"]:
            raise ValueError(f"Cannot resume with {total_steps} total steps: the checkpoint is already at step "
                             f"{resume_state['step']}. Pass at least the first run's --epochs / --max-steps.")
        unwrapped.load_state_dict(resume_state["model"])
        optimizer.optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        _extend_schedule(scheduler, total_steps)
        if accelerator.scaler is not None and resume_state.get("scaler"):
            accelerator.scaler.load_state_dict(resume_state["scaler"])
        step, epoch, micro_done = resume_state["step"], resume_state["epoch"], resume_state["micro_in_epoch"]
        rng = resume_state["rng"]
        if len(rng) == world:
            restore_rng_state(rng[accelerator.process_index])
        else:  # unreachable after the geometry check, kept for checkpoints edited by hand
            log("warning: checkpoint RNG states are for another number of processes; reseeding.")

    if log_with:
        accelerator.init_trackers(recipe.name.replace("/", "_"), config={**recipe.to_dict()["train"], **run_info})
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        log(f"Training {recipe.name} ({recipe.method}, {recipe.backbone.arch}) on {len(train_set)} images: "
            f"{world} process(es) x batch {per_process_batch} x grad_accum {grad_accum} = global batch "
            f"{global_batch}, lr {lr_value:.4g} (= {recipe.train.base_lr:g} x {global_batch} / "
            f"{recipe.train.lr_batch_denom}), {total_steps} steps, output {out_dir}")

    def checkpoint(micro_in_epoch: int) -> None:
        _stop_if_weights_non_finite(accelerator, unwrapped, step, ckpt_path, lr_value)
        rng_all = _gather_objects(accelerator, capture_rng_state())
        if accelerator.is_main_process:
            save_checkpoint(ckpt_path, {
                "model": unwrapped.state_dict(), "optimizer": optimizer.optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
                "epoch": epoch, "step": step, "micro_in_epoch": micro_in_epoch, "rng": rng_all,
                "recipe": recipe.to_dict(), "run": run_info, "seed": seed, "last": last})
        accelerator.wait_for_everyone()

    if resume_state is not None and accelerator.is_main_process:
        trim_log(out_dir / LOG_NAME, resume_state["step"])  # steps logged after the checkpoint run again
    log_file = open(out_dir / LOG_NAME, "a") if accelerator.is_main_process else None
    bar = None
    if progress_bar and accelerator.is_main_process:
        from tqdm.auto import tqdm
        bar = tqdm(total=total_steps, initial=step, desc=recipe.name, dynamic_ncols=True)

    def write_log(record: dict[str, Any]) -> None:
        if log_file is not None:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
        if log_with:
            accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record["step"])

    interrupted = False
    # A resumed run that has no step left keeps the final numbers of the run it continues.
    last: dict[str, float] = dict(resume_state.get("last") or {}) if resume_state is not None else {}
    model.train()
    try:
        with StopRequest() as stop:
            while step < total_steps and epoch < recipe.train.epochs:
                skip = micro_done
                sampler.set_epoch(epoch, skip_batches=skip)
                loader_gen.manual_seed(seed * 100_003 + epoch * 1_009 + skip * 7 + accelerator.process_index)
                epoch_sums: dict[str, float] = {}
                n_epoch = 0
                t0, images = time.perf_counter(), 0
                micro = skip
                for batch in loader:
                    views = [v.to(accelerator.device, memory_format=memory_format, non_blocking=True)
                             for v in batch[0]]
                    sync = (micro + 1) % grad_accum == 0
                    # Accumulation steps skip DDP's gradient all-reduce; the last one synchronises.
                    ctx = contextlib.nullcontext() if sync or world == 1 else accelerator.no_sync(model)
                    with ctx:
                        with accelerator.autocast():
                            out = model(views)
                        parts = _scalars(out)
                        if _any_process(accelerator, not math.isfinite(parts["loss"])):
                            raise NonFiniteLossError(
                                f"Non-finite loss at step {step + 1} (epoch {epoch + 1}): "
                                + ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
                                + f". Training stopped; the last good checkpoint is kept at {ckpt_path} "
                                f"(if one was written). Lower the learning rate (now {lr_value:.4g}) or use "
                                f"--mixed-precision no.")
                        accelerator.backward(out["loss"] / grad_accum)
                    micro += 1
                    images += views[0].shape[0] * world
                    for k, v in parts.items():
                        epoch_sums[k] = epoch_sums.get(k, 0.0) + v
                    n_epoch += 1
                    if not sync:
                        continue
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: no step, no schedule
                        scheduler.step()
                    step += 1
                    unwrapped.after_optimizer_step(step / total_steps)
                    lr_now = optimizer.param_groups[0]["lr"]
                    speed = images / max(time.perf_counter() - t0, 1e-9)
                    last = {**parts, "lr": lr_now}
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{parts['loss']:.4f}", lr=f"{lr_now:.3g}", img_s=f"{speed:.0f}")
                    if step % log_every == 0 or step == total_steps:
                        write_log({"step": step, "epoch": epoch + 1, **parts, "lr": lr_now, "images_per_s": speed})
                    if _any_process(accelerator, stop.requested):
                        checkpoint(micro)
                        interrupted = True
                        log(f"\nStopped at step {step}; checkpoint saved to {ckpt_path}. Continue with --resume.")
                        break
                    if step >= total_steps:
                        break
                if interrupted:
                    break
                if micro < sampler.num_batches:  # stopped by max_steps inside the epoch
                    checkpoint(micro)
                    break
                epoch += 1
                micro_done = 0
                means = {f"epoch_{k}": v / max(n_epoch, 1) for k, v in epoch_sums.items()}
                if knn_every and epoch % knn_every == 0:
                    means.update(online_knn(unwrapped.encoder, online_sets, accelerator, log))
                    if bar is not None:
                        bar.set_postfix(loss=f"{last.get('loss', float('nan')):.4f}", knn=f"{means['knn_top1']:.1f}")
                write_log({"step": step, "epoch": epoch, **means, "lr": optimizer.param_groups[0]["lr"]})
                checkpoint(0)
    except RuntimeError as exc:
        if is_collective_timeout(exc):
            raise _collective_timeout_error(accelerator, timeout_s, ckpt_path) from exc
        raise
    finally:
        if bar is not None:
            bar.close()
        if log_file is not None:
            log_file.close()
        if log_with:
            accelerator.end_training()

    result: dict[str, Any] = {"output": str(out_dir), "step": step, "epoch": epoch, "total_steps": total_steps,
                              "interrupted": interrupted, "lr": lr_value, "global_batch": global_batch,
                              "final": last, "checkpoint": str(ckpt_path)}
    if interrupted:
        return result
    _stop_if_weights_non_finite(accelerator, unwrapped, step, ckpt_path, lr_value)
    if accelerator.is_main_process:
        from .export import save_encoder
        metrics = {"final_loss": last.get("loss"), "steps": step, "epochs_done": epoch}
        save_encoder(unwrapped.encoder, out_dir, recipe, metrics=metrics,
                     extra={"train": {**run_info, "seed": seed, "mixed_precision": accelerator.mixed_precision}})
        log(f"Exported the encoder to {out_dir / 'model.safetensors'} (+ config.json).")
    accelerator.wait_for_everyone()
    result["model"] = str(out_dir / "model.safetensors")
    return result


def _gather_objects(accelerator, obj: Any) -> list[Any]:
    if accelerator.num_processes == 1:
        return [obj]
    from accelerate.utils import gather_object
    return gather_object([obj])


def _recipe_diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> str:
    diffs = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            sub = _recipe_diff(va, vb, f"{prefix}{key}.")
            if sub:
                diffs.append(sub)
        elif va != vb:
            diffs.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return "; ".join(diffs)


# -- command line -----------------------------------------------------------------------------------

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe name (see `ssl-zoo list`)")
    parser.add_argument("--data", default=None, help="dataset folder (a digits recipe reads it as imagefolder)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: the recipe's); with --resume, a larger value extends the run")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="GLOBAL batch size over all processes and accumulation steps (default: the recipe's); "
                             "each process takes batch / (processes x grad_accum) images per step")
    parser.add_argument("--lr", type=float, default=None,
                        help="base lr, replaces the recipe's base_lr; still scaled by global batch / lr_batch_denom")
    parser.add_argument("--output", default=None, help="run folder (default runs/RECIPE)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="PATH",
                        help="continue from OUTPUT/checkpoint.pt, or from PATH (more --epochs extends a finished run)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in --output (deletes its checkpoint, log and export first)")
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None,
                        help="autocast precision (default: bf16 on a bf16-capable GPU, else no)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="NHWC memory format for the model and batches (default: on for CUDA, off on CPU, where "
                             "it pays only from ~64 px)")
    parser.add_argument("--knn-every", type=int, default=None, metavar="N",
                        help="every N epochs: k-NN top-1 (k=20) on the dataset's test split and the collapse "
                             "monitor, logged to log.jsonl, the progress bar and trackers")
    parser.add_argument("--grad-accum", type=int, default=1,
                        help="micro-steps per optimiser step; the global --batch-size is split over them (default 1)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initial weights, data order, augmentations and shuffle-BN (default 0)")
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    parser.add_argument("--log-with", default=None, help="Accelerate tracker: tensorboard, wandb, ... (or all)")
    parser.add_argument("--log-every", type=int, default=10, help="log every N optimiser steps")
    parser.add_argument("--skip-bad-images", dest="on_error", action="store_const", const="skip", default="raise",
                        help="replace unreadable/truncated images (a warning names each) instead of stopping")
    parser.add_argument("--collective-timeout", type=float, default=None, metavar="SECONDS",
                        help="with several processes, stop when one waits this long for the others "
                             "(default $SSL_ZOO_COLLECTIVE_TIMEOUT or 1800)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override, e.g. --set queue_size=4096 --set crop_scale=(0.2,1.0)")


def run_cli(args: argparse.Namespace) -> int:
    try:
        overrides = parse_overrides(args.overrides)
        result = train(args.recipe, data=args.data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       output=args.output, resume=args.resume, mixed_precision=args.mixed_precision,
                       grad_accum=args.grad_accum, seed=args.seed, num_workers=args.num_workers,
                       max_steps=args.max_steps, log_with=args.log_with, overrides=overrides,
                       log_every=args.log_every, on_error=args.on_error, overwrite=args.overwrite,
                       collective_timeout=args.collective_timeout, channels_last=args.channels_last,
                       knn_every=args.knn_every)
    # SslZooError (divergence / stalled peer exit 1, the rest 2); timm's unknown model_args (TypeError);
    # --output under a file or read-only (OSError)
    except (SslZooError, ValueError, TypeError, KeyError, OSError) as exc:
        return report_user_error(exc)
    return 3 if result["interrupted"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssl_zoo.train", description="Train an ssl_zoo recipe.")
    configure_parser(parser)
    return run_cli(parser.parse_args(argv))


__all__ = ["train", "resolve_recipe", "parse_overrides", "scaled_lr", "per_process_batch_size", "build_param_groups", "build_optimizer",
           "build_scheduler", "WarmupCosine", "EpochShardSampler", "NonFiniteLossError", "configure_parser",
           "run_cli", "main"]

if __name__ == "__main__":
    sys.exit(main())
