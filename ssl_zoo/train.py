"""The one training loop for every method, built on Accelerate.

It knows only the ``SSLMethod`` interface (``view_names``, ``forward(views)["loss"]``,
``after_optimizer_step(progress)``, ``parameter_groups()``), so MoCo v2, SimSiam,
LeOCLR, the synth add-on and any registered method train through it unchanged.

    ssl-zoo train moco_v2_r18_digits --epochs 2 --output runs/x
    accelerate launch -m ssl_zoo.train moco_v2_r18_digits --output runs/y

Batch: the recipe's ``batch_size`` (and ``--batch-size``) is the GLOBAL batch; each process
takes ``batch_size / (processes x grad_accum)`` images per micro-step (an error names the
numbers when that does not divide), so a paper recipe is the paper's experiment on 1, 2 or 8
processes. Learning rate, schedule and weight decay: ``ssl_zoo.optim`` (``lr = base_lr *
global_batch / lr_batch_denom``; ``--lr`` replaces ``base_lr``, still scaled). ``sync_bn=True``
normalises BatchNorm over all processes (``ssl_zoo.batchnorm``). Before training, the method's
``prepare_run`` may run stages of its own (synth pre-trains its decoder into ``OUTPUT/decoder_pretrain``).

A run is three phases: :func:`_prepare_run` builds a :class:`TrainingRun` (fixed) and a :class:`RunState`
(step, epoch, ... : what a checkpoint restores), :func:`_train_one_epoch` runs until the epoch ends or
the run must stop, and :func:`_export` writes the encoder.

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
import sys
import time
from collections.abc import Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .checkpoint import (
    CHECKPOINT_NAME,
    capture_rng_state,
    load_checkpoint,
    resolve_checkpoint_path,
    restore_rng_state,
    save_checkpoint,
)
from .data.loader import build_epoch_loader, open_train_data
from .data.sampler import EpochShardSampler
from .distributed import (
    CollectiveTimeoutError,
    adopt_cpu_launch,
    any_process,
    check_launch,
    collective_timeout_seconds,
    gather_objects,
    is_collective_timeout,
    leave_together_at_exit,
)
from .errors import SslZooError, UserInputError, report_user_error
from .evaluation.monitor import online_knn, online_knn_datasets
from .export import NonFiniteWeightsError, describe_non_finite, non_finite_tensors
from .methods.base import SSLMethod
from .optim import (
    ConstantFactor,
    WarmupCosine,
    build_optimizer,
    build_param_groups,
    build_scheduler,
    extend_schedule,
    scaled_lr,
)
from .parsers.train import configure_parser
from .recipe import Recipe, get_recipe, section_override_error
from .run_readme import describe_run
from .runfolder import SKIPPED_NAME, claim_run_folder, run_scope, trim_log
from .signals import StopRequest

LOG_NAME = "log.jsonl"


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
    train_kw = kw.pop("train", None) or {}
    if not isinstance(train_kw, Mapping):
        raise section_override_error("train", train_kw)
    train_kw = dict(train_kw)
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("base_lr", lr)):
        if value is not None:
            train_kw[key] = value
    if train_kw:
        kw["train"] = train_kw
    return base.with_overrides(**kw)


def per_process_batch_size(global_batch: int, num_processes: int, grad_accum: int) -> int:
    """The images one process takes per micro-step for a global batch; an error when it does not divide."""
    parts = num_processes * grad_accum
    if global_batch < 1 or global_batch % parts:
        raise ValueError(f"The global batch {global_batch} cannot be split over {num_processes} process(es) x "
                         f"grad_accum {grad_accum} = {parts} equal parts. Choose a --batch-size that is a multiple "
                         f"of {parts}, or change the number of processes / --grad-accum.")
    return global_batch // parts


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


def _num_images(dataset: Dataset) -> int:
    return len(cast(Sized, dataset))  # every dataset ssl_zoo trains on has a length (map-style)


def _run_warnings(recipe: Recipe, method: SSLMethod, num_images: int, steps_per_epoch: int,
                  accelerator: Any) -> list[str]:
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
    notes += method.dataset_warnings(num_images)
    return notes


def _bn_group_size(recipe: Recipe, method: SSLMethod, per_process_batch: int, accelerator: Any) -> int | None:
    """Images per BatchNorm group in this run (recorded in config.json); warns once when a process's batch is
    smaller than the recipe's group, or refuses when the recipe sets ``strict_bn_groups``."""
    from .batchnorm import check_bn_group_size

    size, note = check_bn_group_size(
        method, per_process_batch=per_process_batch, num_processes=accelerator.num_processes,
        global_batch=recipe.train.batch_size, sync_bn=recipe.train.sync_bn, strict=recipe.train.strict_bn_groups,
        recipe_name=recipe.name)
    if note:
        accelerator.print(f"warning: {note}")
    return size


def _length_given(epochs: int | None, overrides: Mapping[str, Any] | None) -> bool:
    """Whether the caller chose the number of epochs (``--epochs`` or ``--set epochs=N``)."""
    kw = dict(overrides or {})
    return epochs is not None or "epochs" in kw or "epochs" in dict(kw.get("train") or {})


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



# -- what a run is made of --------------------------------------------------------------------------

@dataclass
class TrainOptions:
    """``train``'s keyword arguments that shape the run (documented there)."""

    data: str | None = None
    epochs: int | None = None
    output: str | Path | None = None
    overrides: Mapping[str, Any] | None = None
    resume: bool | str | Path = False
    mixed_precision: str | None = None
    grad_accum: int = 1
    seed: int = 0
    num_workers: int | None = None
    max_steps: int | None = None
    log_with: str | Sequence[str] | None = None
    log_every: int = 10
    progress_bar: bool = True
    on_error: str = "raise"
    overwrite: bool = False
    collective_timeout: float | None = None
    channels_last: bool | None = None
    knn_every: int | None = None
    compile: bool | str = False  # True: inductor; a string names another torch.compile backend
    augment_on_device: bool = False
    allow_changed: Sequence[str] = ()  # what --resume may find changed: "seed", "recipe", "data"


@dataclass
class RunState:
    """Where a run stands: what a checkpoint records besides weights, optimiser and RNG states."""

    step: int = 0  # optimiser steps done
    epoch: int = 0  # whole epochs done
    micro_done: int = 0  # micro-batches of epoch ``epoch`` done before the resume (skipped by the sampler)
    last: dict[str, float] = field(default_factory=dict)  # the last step's loss parts and lr
    interrupted: bool = False  # stopped on Ctrl-C / SIGTERM after a checkpoint (exit code 3)
    resumed: bool = False  # started from a checkpoint


@dataclass
class TrainingRun:
    """What :func:`_prepare_run` builds; fixed while the run trains."""

    recipe: Recipe
    accelerator: Any
    model: nn.Module  # as Accelerate prepared it (DDP-wrapped with several processes)
    method: SSLMethod  # the method itself (unwrapped)
    optimizer: Any  # Accelerate's wrapper; ``.optimizer`` is torch's
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: EpochShardSampler
    loader: DataLoader
    loader_gen: torch.Generator  # reseeded every epoch: the worker seeds of a resumed run match
    out_dir: Path
    run_info: dict[str, Any]  # batch geometry, lr, length and data: checked on resume, stored in the export
    options: TrainOptions
    memory_format: torch.memory_format
    online_sets: tuple[Dataset, Dataset] | None  # the --knn-every bank and queries
    timeout_s: float
    view_finisher: nn.Module | None = None  # --augment-on-device: the batched photometric half of the views
    data_record: dict[str, Any] | None = None  # what --data held (kind, dataset, path, images): config.json's data

    @property
    def ckpt_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    @property
    def total_steps(self) -> int:
        return self.run_info["total_steps"]

    @property
    def lr(self) -> float:
        return self.run_info["lr"]

    def log(self, *args: Any, **kwargs: Any) -> None:
        self.accelerator.print(*args, **kwargs)


class RunLog:
    """``log.jsonl`` (main process), the progress bar and the Accelerate trackers of one run."""

    def __init__(self, run: TrainingRun, state: RunState) -> None:
        self.accelerator = run.accelerator
        self.trackers = bool(run.options.log_with)
        main = self.accelerator.is_main_process
        if state.resumed and main:
            trim_log(run.out_dir / LOG_NAME, state.step)  # steps logged after the checkpoint run again
        self.file = open(run.out_dir / LOG_NAME, "a") if main else None
        self.bar = None
        if run.options.progress_bar and main:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=run.total_steps, initial=state.step, desc=run.recipe.name, dynamic_ncols=True)

    def write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        if self.trackers:
            self.accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))},
                                 step=record["step"])

    def show(self, **postfix: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix(**postfix)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.trackers:
            self.accelerator.end_training()


# -- preparing a run --------------------------------------------------------------------------------

def _check_options(opts: TrainOptions) -> None:
    if opts.grad_accum < 1:
        raise ValueError(f"grad_accum must be >= 1, got {opts.grad_accum}.")
    if opts.max_steps is not None and opts.max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {opts.max_steps}.")
    if opts.log_every < 1:
        raise UserInputError(f"--log-every must be >= 1 (optimiser steps between log lines), got {opts.log_every}.")
    check_trackers(opts.log_with)
    if opts.knn_every is not None and opts.knn_every < 1:
        raise UserInputError(f"--knn-every must be >= 1 (epochs between k-NN evaluations), got {opts.knn_every}.")


def _run_method_stages(recipe: Recipe, out_dir: Path, opts: TrainOptions,
                       custom_dataset: bool) -> tuple[Recipe, bool | str | Path, dict[str, Any] | None]:
    """Stages a method needs before training (synth: decoder pre-training), each resumable.

    Returns the recipe to train, the ``resume`` to train with, and the stage's summary when it was interrupted
    (its own checkpoint holds the work)."""
    from .methods import get_method_class

    stage_kwargs = dict(data=opts.data, seed=opts.seed, num_workers=opts.num_workers,
                        mixed_precision=opts.mixed_precision, grad_accum=opts.grad_accum,
                        progress_bar=opts.progress_bar, on_error=opts.on_error, overwrite=opts.overwrite,
                        collective_timeout=opts.collective_timeout)
    prepared, stage_stop = get_method_class(recipe.method).prepare_run(
        recipe, out_dir, resume=bool(opts.resume), custom_dataset=custom_dataset, **stage_kwargs)
    resume = opts.resume
    if prepared != recipe and resume is True and not (out_dir / CHECKPOINT_NAME).is_file():
        resume = False  # the stages are done and main training has not started yet
    return prepared, resume, stage_stop


def _start_accelerator(opts: TrainOptions, out_dir: Path) -> tuple[Any, float]:
    """The Accelerator (its collective timeout bounds every wait for another process) and that timeout."""
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    timeout_s = collective_timeout_seconds(opts.collective_timeout)
    adopt_cpu_launch()  # torchrun on a CPU machine: gloo, not N processes that each believe they are alone
    accelerator = Accelerator(mixed_precision=default_mixed_precision(opts.mixed_precision),
                              log_with=opts.log_with, project_dir=str(out_dir),
                              kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_s))])
    check_launch(accelerator.num_processes)
    return accelerator, timeout_s


RESUME_CHANGES = ("seed", "recipe", "data")  # what --allow-changed may name


def check_allow_changed(names: Sequence[str]) -> tuple[str, ...]:
    """``--allow-changed`` names (comma-separated strings allowed), checked against :data:`RESUME_CHANGES`."""
    out = tuple(n.strip() for item in names for n in str(item).split(",") if n.strip())
    unknown = [n for n in out if n not in RESUME_CHANGES]
    if unknown:
        raise UserInputError(f"--allow-changed {','.join(unknown)}: not something a resume checks; name any of "
                             f"{', '.join(RESUME_CHANGES)} (e.g. --allow-changed seed,data).")
    return out


def _data_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """How the data of ``new`` (this run's ``run_info`` data keys) differs from the checkpoint's ``old``."""
    parts = []
    for key, label in (("data", "folder"), ("num_images", "images"), ("data_fingerprint", "fingerprint")):
        if key in old and old.get(key) != new.get(key):
            parts.append(f"{label} {old[key]} -> {new.get(key)}")
    return ", ".join(parts)


def _resume_changes(resume_state: Mapping[str, Any], stored: Recipe, recipe: Recipe, opts: TrainOptions,
                    data_identity: Mapping[str, Any]) -> dict[str, str]:
    """What differs between the checkpointed run and this one, by kind (``RESUME_CHANGES``)."""
    changes = {}
    if "seed" in resume_state and resume_state["seed"] != opts.seed:
        changes["seed"] = f"seed {resume_state['seed']} -> {opts.seed}"
    if stored != recipe:
        changes["recipe"] = (f"it was trained with a different recipe "
                             f"({_recipe_diff(stored.to_dict(), recipe.to_dict())})")
    data = _data_changes(resume_state.get("run") or {}, data_identity)
    if data:
        changes["data"] = f"it trained on other data ({data})"
    return changes


def _read_resume_state(resume: bool | str | Path, ckpt_path: Path, recipe: Recipe, opts: TrainOptions,
                       log: Any, data_identity: Mapping[str, Any] | None = None
                       ) -> tuple[dict[str, Any] | None, Recipe, int | None]:
    """The checkpoint to resume from (None without ``resume``), the recipe with the run's length, and max_steps.

    Another seed, recipe or data (``data_identity``: this run's ``data``, ``num_images`` and ``data_fingerprint``)
    is refused in one line naming each difference, unless ``opts.allow_changed`` names it."""
    max_steps = opts.max_steps
    if not resume:
        return None, recipe, max_steps
    source = ckpt_path if resume is True else Path(resume)
    resume_state = load_checkpoint(resolve_checkpoint_path(source))
    if not _length_given(opts.epochs, opts.overrides):
        # A plain --resume continues the run as planned; --epochs / --max-steps on resume set a new length.
        recipe = recipe.with_overrides(train={"epochs": Recipe.from_dict(resume_state["recipe"]).train.epochs})
        if max_steps is None:
            max_steps = resume_state["run"]["total_steps"]
    # Only the length may change on resume: a finished run can be extended with more epochs.
    stored = Recipe.from_dict(resume_state["recipe"]).with_overrides(train={"epochs": recipe.train.epochs})
    changes = _resume_changes(resume_state, stored, recipe, opts, data_identity or {})
    refused = [kind for kind in changes if kind not in opts.allow_changed]
    if refused:
        raise UserInputError(f"Cannot resume {source}: {'; '.join(changes[k] for k in refused)}. Pass the same "
                             f"recipe, --seed and --data as the first run, choose another --output, or continue "
                             f"anyway with --allow-changed {','.join(refused)}.")
    for kind, what in changes.items():
        log(f"warning: resuming {source} although {what} (--allow-changed {kind}).")
    log(f"Resuming from {source} at epoch {resume_state['epoch']}, step {resume_state['step']}.")
    return resume_state, recipe, max_steps


def _data_identity(train_set: Dataset, data: str | None) -> dict[str, Any]:
    """The data a run trains on, as recorded in its checkpoint: folder, number of images and fingerprint
    (``ssl_zoo.data.fingerprint``; None for a caller's own dataset, which has none)."""
    from .data.fingerprint import dataset_fingerprint

    try:
        fingerprint: str | None = dataset_fingerprint(train_set)
    except TypeError:
        fingerprint = None
    return {"data": str(Path(data).resolve()) if data is not None else None, "num_images": _num_images(train_set),
            "data_fingerprint": fingerprint}


def _build_method(recipe: Recipe, method: SSLMethod | None, seed: int, accelerator: Any) -> SSLMethod:
    from accelerate.utils import set_seed

    # Same seed everywhere for the model (identical initial weights on every process) ...
    set_seed(seed)
    if method is None:
        from .factory import create_method
        method = create_method(recipe)
    if recipe.train.sync_bn and accelerator.num_processes > 1:
        from .batchnorm import convert_sync_batchnorm
        method = cast(SSLMethod, convert_sync_batchnorm(method, accelerator.device))  # converts in place
    # ... then a per-process seed for augmentations and shuffle-BN permutations.
    set_seed(seed, device_specific=True)
    return method


def _build_sampler(train_set: Dataset, per_process_batch: int, opts: TrainOptions,
                   accelerator: Any) -> tuple[EpochShardSampler, int]:
    """The sampler over whole accumulation cycles and the optimiser steps per epoch."""
    world = accelerator.num_processes
    sampler = EpochShardSampler(_num_images(train_set), per_process_batch, opts.seed, world, accelerator.process_index)
    steps_per_epoch = sampler.batches_per_epoch() // opts.grad_accum
    # Whole accumulation cycles only: left-over micro-batches would leak gradients into the next epoch.
    sampler.num_batches = steps_per_epoch * opts.grad_accum
    if steps_per_epoch < 1:
        raise ValueError(f"The training set has {_num_images(train_set)} images, fewer than one optimiser step needs "
                         f"(global batch {per_process_batch * world * opts.grad_accum} = {per_process_batch} x "
                         f"{world} processes x grad_accum {opts.grad_accum}). Lower --batch-size.")
    return sampler, steps_per_epoch


def _memory_format(channels_last: bool | None, accelerator: Any) -> torch.memory_format:
    # channels_last: faster convolutions on GPUs and, at >= 64 px, on CPUs (docs/results.md); default on CUDA.
    on = accelerator.device.type == "cuda" if channels_last is None else channels_last
    return torch.channels_last if on else torch.contiguous_format


def _restore(run: TrainingRun, resume_state: dict[str, Any] | None) -> RunState:
    """The state to start from: a fresh run, or the checkpoint's (its geometry and data must match)."""
    if resume_state is None:
        return RunState()
    old, run_info = resume_state["run"], run.run_info
    # the data (folder, images, fingerprint) was checked by _read_resume_state, with --allow-changed
    changed = {k: (old.get(k), v) for k, v in run_info.items()
               if old.get(k) != v
               and k not in ("total_steps", "data", "num_images", "data_fingerprint", "data_kind", "bn_group_size")}
    if changed:
        raise ValueError(f"Cannot resume: the run geometry changed {changed} (old, new). Use the same global batch "
                         f"size, number of processes and --grad-accum as the first run.")
    if run.total_steps < resume_state["step"]:
        raise ValueError(f"Cannot resume with {run.total_steps} total steps: the checkpoint is already at step "
                         f"{resume_state['step']}. Pass at least the first run's --epochs / --max-steps.")
    accelerator = run.accelerator
    run.method.load_state_dict(resume_state["model"])
    run.optimizer.optimizer.load_state_dict(resume_state["optimizer"])
    run.scheduler.load_state_dict(resume_state["scheduler"])
    extend_schedule(run.scheduler, run.total_steps)
    if accelerator.scaler is not None and resume_state.get("scaler"):
        accelerator.scaler.load_state_dict(resume_state["scaler"])
    rng = resume_state["rng"]
    if len(rng) == accelerator.num_processes:
        restore_rng_state(rng[accelerator.process_index])
    else:  # unreachable after the geometry check, kept for checkpoints edited by hand
        run.log("warning: checkpoint RNG states are for another number of processes; reseeding.")
    # A resumed run that has no step left keeps the final numbers of the run it continues.
    return RunState(step=resume_state["step"], epoch=resume_state["epoch"],
                    micro_done=resume_state["micro_in_epoch"], last=dict(resume_state.get("last") or {}),
                    resumed=True)


def _assemble_run(recipe: Recipe, method: SSLMethod | None, train_set: Dataset, custom_dataset: bool, out_dir: Path,
                  opts: TrainOptions, max_steps: int | None, accelerator: Any, timeout_s: float) -> TrainingRun:
    """Sampler, loader, optimiser and schedule around ``method``, prepared by Accelerate."""
    world, grad_accum = accelerator.num_processes, opts.grad_accum
    global_batch = recipe.train.batch_size
    per_process_batch = per_process_batch_size(global_batch, world, grad_accum)
    method = _build_method(recipe, method, opts.seed, accelerator)
    lr_value = scaled_lr(recipe.train.base_lr, global_batch, recipe.train.lr_batch_denom)
    view_finisher = None
    if not custom_dataset:  # a caller's dataset brings its own views
        from .transforms import build_multiview_transform
        cast(Any, train_set).transform = build_multiview_transform(
            method.view_names, recipe.augment, photometric_on_device=opts.augment_on_device)
        if opts.augment_on_device:
            from .device_augment import DeviceViewFinisher
            view_finisher = DeviceViewFinisher(method.view_names, recipe.augment).to(accelerator.device)
    sampler, steps_per_epoch = _build_sampler(train_set, per_process_batch, opts, accelerator)
    bn_group_size = _bn_group_size(recipe, method, per_process_batch, accelerator)
    online_sets = online_knn_datasets(recipe, opts.data, opts.seed, accelerator.print) if opts.knn_every else None
    for note in _run_warnings(recipe, method, _num_images(train_set), steps_per_epoch, accelerator):
        accelerator.print(f"warning: {note}")
    total_steps = recipe.train.epochs * steps_per_epoch
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    workers = recipe.train.num_workers if opts.num_workers is None else opts.num_workers
    loader_gen = torch.Generator()
    loader = build_epoch_loader(train_set, per_process_batch, workers, sampler, loader_gen)
    groups = build_param_groups(method, lr_value, recipe.train.weight_decay, recipe.train.decay_norm_and_bias)
    optimizer = build_optimizer(groups, recipe)
    scheduler = build_scheduler(optimizer, recipe, total_steps, steps_per_epoch)
    memory_format = _memory_format(opts.channels_last, accelerator)
    method.to(memory_format=memory_format)
    if opts.compile:
        # nn.Module.compile(): the module keeps its own state-dict keys, so checkpoints and exports are unchanged.
        method.compile(backend="inductor" if opts.compile is True else opts.compile)
    model, optimizer = accelerator.prepare(method, optimizer)
    run_info = {"global_batch": global_batch, "per_process_batch": per_process_batch, "num_processes": world,
                "grad_accum": grad_accum, "lr": lr_value, "bn_group_size": bn_group_size,
                "total_steps": total_steps, "steps_per_epoch": steps_per_epoch,
                # the data a run trains on is part of the run: resuming on other images is refused
                "data": str(Path(opts.data).resolve()) if opts.data is not None else None,
                "num_images": _num_images(train_set)}
    return TrainingRun(recipe, accelerator, model, accelerator.unwrap_model(model), optimizer, scheduler, sampler,
                       loader, loader_gen, out_dir, run_info, opts, memory_format, online_sets, timeout_s,
                       view_finisher)


def _prepare_run(recipe_or_name: str | Recipe, opts: TrainOptions, method: SSLMethod | None,
                 dataset: Dataset | None, lr: float | None,
                 batch_size: int | None) -> tuple[TrainingRun, RunState] | dict[str, Any]:
    """Everything up to the first step: the run and the state it starts from, or the summary of an
    interrupted method stage (synth's decoder pre-training)."""
    recipe = resolve_recipe(recipe_or_name, epochs=opts.epochs, batch_size=batch_size, lr=lr,
                            overrides=opts.overrides)
    _check_options(opts)
    if dataset is not None and opts.augment_on_device:  # refused before any stage or model is built
        raise UserInputError("--augment-on-device needs the recipe's own dataset: a caller's dataset brings "
                             "finished views.")
    out_dir = Path(opts.output) if opts.output is not None else Path("runs") / recipe.name
    # Local things first: a missing or malformed dataset folder fails before any download (timm init
    # weights) and before any stage runs. Views are attached once the method says which it needs. --data is
    # the recipe dataset's own layout, a class tree or unlabelled images: the recipe switches to its reader.
    data_record, data_note = None, None
    if dataset is None:
        recipe, train_set, data_record, data_note = open_train_data(recipe, opts.data, opts.on_error)
    else:
        train_set = dataset
    resume = opts.resume
    if method is None:
        recipe, resume, stage_stop = _run_method_stages(recipe, out_dir, opts, custom_dataset=dataset is not None)
        if stage_stop is not None:
            return stage_stop
    accelerator, timeout_s = _start_accelerator(opts, out_dir)
    if data_note:
        accelerator.print(data_note)
    claim_run_folder(accelerator, out_dir, resume=bool(resume), overwrite=opts.overwrite)
    data_identity = _data_identity(train_set, opts.data)
    resume_state, recipe, max_steps = _read_resume_state(resume, out_dir / CHECKPOINT_NAME, recipe, opts,
                                                         accelerator.print, data_identity)
    run = _assemble_run(recipe, method, train_set, dataset is not None, out_dir, opts, max_steps, accelerator,
                        timeout_s)
    run.run_info.update(data_identity)  # recorded in every checkpoint and the export's config.json
    if opts.on_error == "skip" and hasattr(train_set, "skip_log"):
        cast(Any, train_set).skip_log = str(out_dir / SKIPPED_NAME)
    if data_record is not None:
        run.data_record = data_record
        run.run_info["data_kind"] = data_record["kind"]
    state = _restore(run, resume_state)
    if opts.log_with:
        accelerator.init_trackers(recipe.name.replace("/", "_"), config={**recipe.to_dict()["train"], **run.run_info})
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        info = run.run_info
        run.log(f"Training {recipe.name} ({recipe.method}, {recipe.backbone.arch}) on {info['num_images']} images: "
                f"{info['num_processes']} process(es) x batch {info['per_process_batch']} x grad_accum "
                f"{info['grad_accum']} = global batch {info['global_batch']}, lr {run.lr:.4g} (= "
                f"{recipe.train.base_lr:g} x {info['global_batch']} / {recipe.train.lr_batch_denom}), "
                f"{run.total_steps} steps, output {out_dir}")
    return run, state


# -- one epoch --------------------------------------------------------------------------------------

def _forward_backward(run: TrainingRun, state: RunState, views: list[Tensor], sync: bool) -> dict[str, float]:
    """One micro-step: the loss and its parts (as floats); gradients accumulate until ``sync``."""
    accelerator = run.accelerator
    # Accumulation steps skip DDP's gradient all-reduce; the last one synchronises.
    no_sync = not sync and accelerator.num_processes > 1
    with accelerator.no_sync(run.model) if no_sync else contextlib.nullcontext():
        with accelerator.autocast():
            out = run.model(views)
        parts = _scalars(out)
        if any_process(accelerator, not math.isfinite(parts["loss"])):
            raise NonFiniteLossError(
                f"Non-finite loss at step {state.step + 1} (epoch {state.epoch + 1}): "
                + ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
                + f". Training stopped; the last good checkpoint is kept at {run.ckpt_path} "
                f"(if one was written). Lower the learning rate (now {run.lr:.4g}) or use "
                f"--mixed-precision no.")
        accelerator.backward(out["loss"] / run.options.grad_accum)
    return parts


def _optimizer_step(run: TrainingRun, state: RunState, runlog: RunLog, parts: dict[str, float],
                    images: int, t0: float) -> None:
    """The optimiser and schedule step, the method's own update (momentum encoder, ...) and the step's log."""
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    if not run.accelerator.optimizer_step_was_skipped:  # fp16 overflow: no step, no schedule
        run.scheduler.step()
    state.step += 1
    run.method.after_optimizer_step(state.step / run.total_steps)
    lr_now = run.optimizer.param_groups[0]["lr"]
    speed = images / max(time.perf_counter() - t0, 1e-9)  # this epoch's images per second, all processes
    state.last = {**parts, "lr": lr_now}
    if runlog.bar is not None:
        runlog.bar.update(1)
    runlog.show(loss=f"{parts['loss']:.4f}", lr=f"{lr_now:.3g}", img_s=f"{speed:.0f}")
    if state.step % run.options.log_every == 0 or state.step == run.total_steps:
        runlog.write({"step": state.step, "epoch": state.epoch + 1, **parts, "lr": lr_now, "images_per_s": speed})


def _train_one_epoch(run: TrainingRun, state: RunState, runlog: RunLog,
                     stop: StopRequest) -> dict[str, float] | None:
    """Train epoch ``state.epoch`` from its first unseen batch. Returns the epoch's mean loss parts, or None
    when the run stops inside it (a stop request, or ``max_steps``), after a checkpoint."""
    accelerator, grad_accum = run.accelerator, run.options.grad_accum
    skip = state.micro_done
    run.sampler.set_epoch(state.epoch, skip_batches=skip)
    run.loader_gen.manual_seed(run.options.seed * 100_003 + state.epoch * 1_009 + skip * 7
                               + accelerator.process_index)
    sums: dict[str, float] = {}
    micro, t0, images = skip, time.perf_counter(), 0
    for batch in run.loader:
        if run.view_finisher is None:  # one copy: to the device in the model's memory format
            views = [v.to(accelerator.device, memory_format=run.memory_format, non_blocking=True) for v in batch[0]]
        else:  # uint8 crops in, normalised augmented views out; the format once, on the finished views
            views = [v.contiguous(memory_format=run.memory_format)
                     for v in run.view_finisher([v.to(accelerator.device, non_blocking=True) for v in batch[0]])]
        sync = (micro + 1) % grad_accum == 0
        parts = _forward_backward(run, state, views, sync)
        micro += 1
        images += views[0].shape[0] * accelerator.num_processes
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        if not sync:
            continue
        _optimizer_step(run, state, runlog, parts, images, t0)
        if any_process(accelerator, stop.requested):
            _save_checkpoint(run, state, micro)
            state.interrupted = True
            run.log(f"\nStopped at step {state.step}; checkpoint saved to {run.ckpt_path}. Continue with --resume.")
            return None
        if state.step >= run.total_steps:
            break
    if micro < run.sampler.num_batches:  # stopped by max_steps inside the epoch
        _save_checkpoint(run, state, micro)
        return None
    return {f"epoch_{k}": v / max(micro - skip, 1) for k, v in sums.items()}


def _finish_epoch(run: TrainingRun, state: RunState, runlog: RunLog, means: dict[str, float]) -> None:
    """Count the epoch, run the --knn-every monitor when due, log the epoch's means and checkpoint."""
    state.epoch += 1
    state.micro_done = 0
    knn_every = run.options.knn_every
    if knn_every and state.epoch % knn_every == 0 and run.online_sets is not None:  # None: no labels
        means.update(online_knn(run.method.encoder, run.online_sets, run.accelerator, run.log))
        runlog.show(loss=f"{state.last.get('loss', float('nan')):.4f}", knn=f"{means['knn_top1']:.1f}")
    skipped = _skipped_images(run)
    if skipped:
        means["skipped_images"] = len(skipped)
    runlog.write({"step": state.step, "epoch": state.epoch, **means, "lr": run.optimizer.param_groups[0]["lr"]})
    _save_checkpoint(run, state, 0)


def _train_epochs(run: TrainingRun, state: RunState, runlog: RunLog) -> None:
    """Epochs until the planned length, ``max_steps`` or a stop request."""
    run.model.train()
    try:
        with StopRequest() as stop:
            while state.step < run.total_steps and state.epoch < run.recipe.train.epochs:
                means = _train_one_epoch(run, state, runlog, stop)
                if means is None:
                    break
                _finish_epoch(run, state, runlog, means)
    except RuntimeError as exc:
        if is_collective_timeout(exc):
            raise _collective_timeout_error(run.accelerator, run.timeout_s, run.ckpt_path) from exc
        raise
    finally:
        runlog.close()
        _report_skipped(run)


def _skipped_images(run: TrainingRun) -> list[str]:
    """The distinct images --skip-bad-images skipped so far in this run (all processes and workers)."""
    path = run.out_dir / SKIPPED_NAME
    if run.options.on_error != "skip" or not path.is_file():
        return []
    return sorted({line.split("\t", 1)[0] for line in path.read_text().splitlines() if line.strip()})


def _report_skipped(run: TrainingRun) -> None:
    """At the end of a run: the images --skip-bad-images skipped, named (all of them are in SKIPPED_NAME)."""
    skipped = _skipped_images(run)
    if skipped:
        shown = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        run.log(f"Skipped {len(skipped)} unreadable image(s) (--skip-bad-images; listed with the reasons in "
                f"{run.out_dir / SKIPPED_NAME}): {shown}")


# -- checkpoints, diverged weights, stalled processes, export ---------------------------------------

def _save_checkpoint(run: TrainingRun, state: RunState, micro_in_epoch: int) -> None:
    accelerator = run.accelerator
    _stop_if_weights_non_finite(accelerator, run.method, state.step, run.ckpt_path, run.lr)
    rng_all = gather_objects(accelerator, capture_rng_state())
    if accelerator.is_main_process:
        save_checkpoint(run.ckpt_path, {
            "model": run.method.state_dict(), "optimizer": run.optimizer.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            "epoch": state.epoch, "step": state.step, "micro_in_epoch": micro_in_epoch, "rng": rng_all,
            "recipe": run.recipe.to_dict(), "run": run.run_info, "seed": run.options.seed, "last": state.last})
    accelerator.wait_for_everyone()


def _stop_if_weights_non_finite(accelerator: Any, module: nn.Module, step: int, ckpt_path: Path,
                                lr_value: float) -> None:
    """Diverged parameters or buffers (a BatchNorm ``running_var`` of inf) stop the run like a NaN loss,
    before they reach a checkpoint or the export. Each process checks its own copy: BN statistics are
    per process."""
    bad = non_finite_tensors(module.state_dict())
    if any_process(accelerator, bool(bad)):
        what = describe_non_finite(bad) if bad else "tensors on another process"
        raise NonFiniteWeightsError(
            f"Non-finite weights at step {step}: {what} hold NaN/inf. Training stopped; the last finite "
            f"checkpoint is kept at {ckpt_path} (if one was written). Lower the learning rate (now "
            f"{lr_value:.4g}) or use --mixed-precision no.")


def _collective_timeout_error(accelerator: Any, timeout_s: float, ckpt_path: Path) -> CollectiveTimeoutError:
    return CollectiveTimeoutError(
        f"Process {accelerator.process_index} waited more than {timeout_s:g} s for the other processes in a "
        f"collective operation: one of them stalled or died (stopped, out of memory, a hung data loader or file "
        f"system). The run stopped; the last checkpoint at {ckpt_path} is kept, if one was written (continue "
        f"with --resume). If steps can legitimately take longer, raise --collective-timeout.")


def _progress(run: TrainingRun, state: RunState) -> dict[str, Any]:
    """What the exported weights went through (config.json's ``ssl_zoo.progress``, the model card's intro):
    optimiser steps and fractional epochs done, images seen, and why the run stopped."""
    per_epoch = run.run_info["steps_per_epoch"]
    planned = run.recipe.train.epochs
    reason = "completed" if state.step >= planned * per_epoch else "max-steps"
    return {"steps": state.step, "steps_per_epoch": per_epoch, "epochs": round(state.step / per_epoch, 4),
            "planned_epochs": planned, "images_seen": state.step * run.run_info["global_batch"],
            "stop_reason": reason}


def _export(run: TrainingRun, state: RunState) -> Path:
    """The encoder as ``model.safetensors`` + ``config.json`` (refused when its weights are not finite)."""
    accelerator = run.accelerator
    _stop_if_weights_non_finite(accelerator, run.method, state.step, run.ckpt_path, run.lr)
    if accelerator.is_main_process:
        from .export import save_encoder
        metrics = {"final_loss": state.last.get("loss"), "steps": state.step, "epochs_done": state.epoch}
        extra: dict[str, Any] = {"train": {**run.run_info, "seed": run.options.seed,
                                           "mixed_precision": accelerator.mixed_precision},
                                 "progress": _progress(run, state)}
        if run.data_record is not None:
            extra["data"] = run.data_record  # read back by `ssl-zoo eval` for its default --dataset / --data
        save_encoder(run.method.encoder, run.out_dir, run.recipe, metrics=metrics, extra=extra)
        run.log(f"Exported the encoder to {run.out_dir / 'model.safetensors'} (+ config.json).")
        describe_run(run.out_dir, log=run.log)  # curves.png + README.md; never fails the run
    accelerator.wait_for_everyone()
    return run.out_dir / "model.safetensors"


# -- the entry point --------------------------------------------------------------------------------

@run_scope  # releases the run-folder lock however train() ends
def train(recipe_or_name: str | Recipe, *, data: str | None = None, epochs: int | None = None,
          batch_size: int | None = None, lr: float | None = None, output: str | Path | None = None,
          resume: bool | str | Path = False, mixed_precision: str | None = None, grad_accum: int = 1,
          seed: int = 0, num_workers: int | None = None, max_steps: int | None = None,
          log_with: str | Sequence[str] | None = None, overrides: Mapping[str, Any] | None = None,
          method: SSLMethod | None = None, log_every: int = 10, dataset: Dataset | None = None,
          progress_bar: bool = True, on_error: str = "raise", overwrite: bool = False,
          collective_timeout: float | None = None, channels_last: bool | None = None,
          knn_every: int | None = None, compile: bool | str = False, augment_on_device: bool = False,
          allow_changed: Sequence[str] = ()) -> dict[str, Any]:
    """Train a recipe (or a pre-built ``method``) and export its encoder; returns a summary dict.

    ``lr`` replaces the recipe's ``base_lr`` (still scaled by global batch / lr_batch_denom).
    ``max_steps`` caps the number of optimiser steps (the schedule then spans ``max_steps``).
    ``resume=True`` continues from ``output/checkpoint.pt``; a path resumes from that file/folder. A resume with
    another seed, recipe or data (``ssl_zoo.data.fingerprint``) is refused unless ``allow_changed`` names it
    (``("seed", "data")``). Without
    ``epochs`` the resumed run keeps the checkpoint's epochs (and, without ``max_steps`` too, its total
    steps); given ``epochs`` / ``max_steps`` set a new length (extending a finished run).
    A folder that holds a run is refused unless ``resume`` or ``overwrite`` (which deletes that run's files);
    the folder is locked against other processes while ``train`` runs.
    ``collective_timeout`` (seconds; default ``$SSL_ZOO_COLLECTIVE_TIMEOUT`` or 1800) bounds how long a
    process waits for the others; then :class:`~ssl_zoo.distributed.CollectiveTimeoutError` is raised.
    ``dataset`` replaces the recipe's dataset (items ``(list_of_views, label)``).
    ``on_error="skip"`` replaces unreadable images (warned and counted) instead of stopping.
    ``compile=True`` runs the method's forward through ``torch.compile`` (``nn.Module.compile``, inductor; a
    string names another backend).
    ``augment_on_device=True`` leaves colour jitter, grayscale and blur to the training device
    (``ssl_zoo.device_augment``): for GPUs whose DataLoader workers cannot keep up.
    Raises :class:`NonFiniteLossError` when the loss is NaN/inf and
    :class:`~ssl_zoo.export.NonFiniteWeightsError` when parameters or buffers are (checked at every
    checkpoint and before the export).
    """
    opts = TrainOptions(data=data, epochs=epochs, output=output, overrides=overrides, resume=resume,
                        mixed_precision=mixed_precision, grad_accum=grad_accum, seed=seed, num_workers=num_workers,
                        max_steps=max_steps, log_with=log_with, log_every=log_every, progress_bar=progress_bar,
                        on_error=on_error, overwrite=overwrite, collective_timeout=collective_timeout,
                        channels_last=channels_last, knn_every=knn_every, compile=compile,
                        augment_on_device=augment_on_device, allow_changed=check_allow_changed(allow_changed))
    prepared = _prepare_run(recipe_or_name, opts, method, dataset, lr=lr, batch_size=batch_size)
    if isinstance(prepared, dict):  # a method stage was interrupted: its own checkpoint holds the work
        return prepared
    run, state = prepared
    _train_epochs(run, state, RunLog(run, state))
    result: dict[str, Any] = {"output": str(run.out_dir), "step": state.step, "epoch": state.epoch,
                              "total_steps": run.total_steps, "interrupted": state.interrupted, "lr": run.lr,
                              "global_batch": run.run_info["global_batch"], "final": state.last,
                              "checkpoint": str(run.ckpt_path)}
    if not state.interrupted:
        result["model"] = str(_export(run, state))
    return result


# -- command line -----------------------------------------------------------------------------------

def run_cli(args: argparse.Namespace) -> int:
    try:
        overrides = parse_overrides(args.overrides)
        result = train(args.recipe, data=args.data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       output=args.output, resume=args.resume, mixed_precision=args.mixed_precision,
                       grad_accum=args.grad_accum, seed=args.seed, num_workers=args.num_workers,
                       max_steps=args.max_steps, log_with=args.log_with, overrides=overrides,
                       log_every=args.log_every, on_error=args.on_error, overwrite=args.overwrite,
                       collective_timeout=args.collective_timeout, channels_last=args.channels_last,
                       knn_every=args.knn_every, compile=args.compile_backend if args.compile else False,
                       augment_on_device=args.augment_on_device, allow_changed=args.allow_changed)
    # SslZooError (divergence / stalled peer exit 1, the rest 2); timm's unknown model_args (TypeError);
    # --output under a file or read-only (OSError)
    except (SslZooError, ValueError, TypeError, KeyError, OSError) as exc:
        return report_user_error(exc)
    leave_together_at_exit()  # every process got here: leave gloo together, not first-come
    return 3 if result["interrupted"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssl_zoo.train", description="Train an ssl_zoo recipe.")
    configure_parser(parser)
    return run_cli(parser.parse_args(argv))


# scaled_lr ... EpochShardSampler, online_knn: re-exported from their modules (ssl_zoo.optim, ssl_zoo.data.sampler,
# ssl_zoo.evaluation.monitor), where they moved from here.
__all__ = ["train", "resolve_recipe", "parse_overrides", "per_process_batch_size", "NonFiniteLossError",
           "TrainingRun", "RunState", "configure_parser", "run_cli", "main",
           "scaled_lr", "build_param_groups", "build_optimizer", "build_scheduler", "WarmupCosine", "ConstantFactor",
           "EpochShardSampler", "online_knn"]

if __name__ == "__main__":
    sys.exit(main())
