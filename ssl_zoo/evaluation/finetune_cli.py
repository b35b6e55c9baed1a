"""``ssl-zoo eval finetune|transfer|crop-robustness`` and ``benchmarks/{finetune,transfer,crop_robustness}.py``.

The arguments and runners of the three LeOCLR protocols beyond the linear probe; they plug into
``ssl_zoo.evaluation.cli`` (same model loading; JSON record and Markdown row from ``ssl_zoo.report``). See
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ..errors import UserInputError
from ..parsers.eval import HEAD_NAME
from .splits import eval_split, split_info

if TYPE_CHECKING:
    from accelerate import Accelerator

PROTOCOLS = ("finetune", "transfer", "crop-robustness")


def fill_defaults(args: argparse.Namespace) -> None:
    """Resolve the protocol-dependent defaults of --epochs / --lr / --weight-decay and check the options."""
    protocol = args.protocol
    linear_like = protocol == "linear" or (protocol == "crop-robustness" and args.head is None)
    if protocol == "finetune" and args.split_file is not None and args.label_fraction != 1.0:
        raise UserInputError("give --split-file or --label-fraction, not both.")
    if protocol == "transfer" and (args.lr is not None or args.weight_decay is not None):
        raise UserInputError("transfer selects lr and weight decay from --grid-lr / --grid-wd; drop --lr / "
                         "--weight-decay.")
    if protocol == "transfer" and not 0.0 < args.val_fraction < 1.0:
        raise UserInputError(f"--val-fraction must be in (0, 1), got {args.val_fraction}.")
    if protocol == "crop-robustness" and args.head is not None and args.cached_features:
        raise UserInputError("--cached-features trains a linear probe; with --head there is none to train.")
    if linear_like:
        args.epochs = 100 if args.epochs is None else args.epochs
        args.lr = 30.0 if args.lr is None else args.lr
        args.weight_decay = 0.0 if args.weight_decay is None else args.weight_decay
    elif protocol in ("finetune", "transfer"):
        args.weight_decay = 0.0 if args.weight_decay is None else args.weight_decay
    args.crop_scale_ranges = [_parse_scale(s) for s in args.crop_scales]
    if protocol == "crop-robustness" and not args.crop_scale_ranges and not args.center:
        raise UserInputError("nothing to test: give --crop-scales or drop --no-center.")


def _parse_scale(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UserInputError(f"--crop-scales takes LOW,HIGH pairs such as 0.08,1; got {text!r}.") from None
    if not 0.0 < lo <= hi <= 1.0:
        raise UserInputError(f"a crop scale range needs 0 < LOW <= HIGH <= 1, got {text!r}.")
    return lo, hi


def _cfg(args: argparse.Namespace, epochs: int):
    from .finetune import FinetuneCfg

    return FinetuneCfg(epochs=epochs, lr=args.lr, base_lr=args.base_lr, momentum=args.momentum,
                       nesterov=args.nesterov, weight_decay=args.weight_decay, batch_size=args.batch_size,
                       schedule=args.schedule, sync_bn=args.sync_bn, seed=args.seed)


def _log(accelerator: Accelerator):
    return print if accelerator.is_main_process else None


# ------------------------------------------------------------------------------------------- finetune
def run_finetune(args, encoder, image_size, accelerator):
    from ..transforms import eval_transform, linear_train_transform
    from .finetune import default_epochs, finetune, split_file_indices

    train_tf = linear_train_transform(encoder, image_size)
    test = eval_split(args, args.test_split, eval_transform(encoder, image_size))
    if args.split_file is not None:
        full = eval_split(args, args.train_split, train_tf)
        train = full.subset(split_file_indices(full, args.split_file))
        fraction = len(train) / len(full)
    else:
        train = eval_split(args, args.train_split, train_tf, label_fraction=args.label_fraction)
        fraction = args.label_fraction
    epochs = args.epochs if args.epochs is not None else default_epochs(fraction)
    cfg = _cfg(args, epochs)
    out = finetune(encoder, train, test, cfg, num_classes=len(train.classes), num_workers=args.num_workers,
                   accelerator=accelerator, log=_log(accelerator), log_every=max(1, epochs // 10),
                   return_model=args.save_model is not None)
    if args.save_model is not None and accelerator.is_main_process:
        _save_finetuned(out["model"], Path(args.save_model), args, encoder)
    metrics = {"top1": 100 * out["top1"], "top5": 100 * out["top5"], "train_loss": out["train_loss"]}
    settings = {**cfg.to_dict(), "label_fraction": args.label_fraction if args.split_file is None else None,
                "split_file": args.split_file, "labelled_share": round(fraction, 6),
                "epochs_source": "--epochs" if args.epochs is not None else
                "default for the label fraction (LeOCLR: 60 for 1%, 30 for 10%)",
                "optimizer": f"SGD{' Nesterov' if cfg.nesterov else ''} momentum {cfg.momentum}",
                "lr_source": "--lr" if args.lr is not None else f"base_lr {cfg.base_lr} x batch / 256",
                "trained": "whole encoder + linear head", "classifier_init": f"N(0, {cfg.init_std}) weights, zero bias",
                "batchnorm": "SyncBatchNorm (global batch)" if accelerator.num_processes > 1 and cfg.sync_bn
                else "per-process batch statistics",
                "train_transform": "RandomResizedCrop + horizontal flip",
                "test_transform": "eval (Resize + CenterCrop)",
                "reported_epoch": "last", "saved_model": args.save_model,
                "protocol_note": "SimCLR semi-supervised fine-tuning protocol (LeOCLR Table 2, Fig. 5)"}
    return metrics, settings, split_info(args.train_split, len(train), args.test_split, len(test), train,
                                          num_classes=len(train.classes))


def _save_finetuned(model: nn.Module, out: Path, args: argparse.Namespace, encoder: nn.Module) -> None:
    from safetensors.torch import save_file

    from ..export import encoder_state_dict, read_encoder_config, save_encoder
    from ..hub import find_model_dir
    from ..recipe import list_models

    path = Path(args.model).expanduser()
    kwargs: dict[str, Any] = {}
    if path.exists():
        config = read_encoder_config(find_model_dir(path))
        kwargs = {"architecture": config["architecture"], "model_args": config.get("model_args") or {}}
    elif args.model in list_models():
        from ..recipe import get_recipe

        kwargs = {"recipe": get_recipe(args.model)}
    else:
        kwargs = {"architecture": (getattr(encoder, "pretrained_cfg", None) or {}).get("architecture")}
    finetuned = model.encoder
    finetuned.pretrained_cfg = getattr(encoder, "pretrained_cfg", {})
    save_encoder(finetuned, out / "encoder", extra={"finetuned_from": args.model}, **kwargs)
    save_file(encoder_state_dict(model.fc), str(out / HEAD_NAME))
    print(f"wrote {out / 'encoder'} and {out / HEAD_NAME}")


def load_head(path: str, num_features: int) -> nn.Linear:
    """The linear head saved by ``--save-model`` (``weight`` (C, D), ``bias`` (C,))."""
    from safetensors.torch import load_file

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"--head {p} does not exist; pass the {HEAD_NAME} written by `ssl-zoo eval finetune "
                                "--save-model DIR`.")
    state = load_file(str(p))
    if set(state) != {"weight", "bias"} or state["weight"].ndim != 2:
        raise ValueError(f"--head {p} is not a linear head (expected 'weight' (C, D) and 'bias' (C,), got "
                         f"{sorted(state)}).")
    if state["weight"].shape[1] != num_features:
        raise ValueError(f"--head {p} takes {state['weight'].shape[1]}-d features but the encoder gives "
                         f"{num_features}; pass the encoder it was fine-tuned with (DIR/encoder).")
    fc = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    fc.load_state_dict(state)
    return fc


# ------------------------------------------------------------------------------------------- transfer
def run_transfer(args, encoder, image_size, accelerator):
    from ..transforms import eval_transform, linear_train_transform
    from .finetune import transfer_finetune

    epochs = args.epochs if args.epochs is not None else 30
    cfg = _cfg(args, epochs)
    train = eval_split(args, args.train_split, linear_train_transform(encoder, image_size))
    train_eval = eval_split(args, args.train_split, eval_transform(encoder, image_size))
    test = eval_split(args, args.test_split, eval_transform(encoder, image_size))
    out = transfer_finetune(encoder, train, train_eval, test, args.grid_lr, args.grid_wd, cfg,
                            val_fraction=args.val_fraction, num_classes=len(train.classes),
                            num_workers=args.num_workers, accelerator=accelerator, log=_log(accelerator))
    metrics = {"top1": 100 * out["top1"], "top5": 100 * out["top5"], "train_loss": out["train_loss"]}
    settings = {**{k: v for k, v in cfg.to_dict().items() if k not in ("lr", "weight_decay", "peak_lr")},
                "grid": {"lr": list(args.grid_lr), "weight_decay": list(args.grid_wd)},
                "validation": [{**cell, "val_top1": round(100 * cell["val_top1"], 4)} for cell in out["grid"]],
                "selected": out["selected"], "selection": "best held-out top-1; ties: first cell in lr-major order",
                "val_fraction": args.val_fraction, "num_train_during_search": out["num_train"],
                "num_val": out["num_val"], "final_training": "whole train split with the selected cell",
                "optimizer": f"SGD{' Nesterov' if cfg.nesterov else ''} momentum {cfg.momentum}",
                "trained": "whole encoder + linear head", "train_transform": "RandomResizedCrop + horizontal flip",
                "test_transform": "eval (Resize + CenterCrop)", "reported_epoch": "last",
                "protocol_note": "transfer fine-tuning with a per-task lr x wd grid (LeOCLR Table 3; SimCLR / BYOL)"}
    return metrics, settings, split_info(args.train_split, len(train), args.test_split, len(test), train,
                                          num_classes=len(train.classes))


# ------------------------------------------------------------------------------------ crop robustness
def run_crop_robustness(args, encoder, image_size, accelerator):
    from ..transforms import augment_cfg_for, eval_transform, linear_train_transform
    from .features import extract_features
    from .finetune import EncoderWithHead
    from .linear import LinearProbeCfg, _feature_dim, linear_probe, linear_probe_on_features
    from .robustness import crop_robustness, crop_settings, random_crop_transform

    center_tf = eval_transform(encoder, image_size)
    test = eval_split(args, args.test_split, center_tf)
    settings: dict[str, Any] = {}
    num_train = None
    if args.head is not None:
        fc = load_head(args.head, _feature_dim(encoder, test, accelerator.device))
        settings["classifier"] = f"fine-tuned head {args.head}"
    else:
        cfg = LinearProbeCfg(epochs=args.epochs, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                             milestones=tuple(args.milestones), batch_size=args.batch_size, seed=args.seed)
        train_tf = center_tf if args.cached_features else linear_train_transform(encoder, image_size)
        train = eval_split(args, args.train_split, train_tf, label_fraction=args.label_fraction)
        num_train = len(train)
        every = max(1, cfg.epochs // 10)
        if args.cached_features:
            per_process = max(1, args.batch_size // accelerator.num_processes)
            train_f, train_l = extract_features(encoder, train, per_process, args.num_workers, accelerator=accelerator)
            # trained on every process from the same features and seed: the same classifier everywhere
            out = linear_probe_on_features(train_f, train_l, train_f[:1], train_l[:1], cfg=cfg,
                                           num_classes=len(train.classes), log=_log(accelerator), log_every=every,
                                           return_classifier=True)
        else:
            out = linear_probe(encoder, train, test, cfg=cfg, num_classes=len(train.classes),
                               num_workers=args.num_workers, accelerator=accelerator, log=_log(accelerator),
                               log_every=every, return_classifier=True)
        fc = out["classifier"]
        settings.update(classifier="linear probe trained here (MoCo protocol" +
                        (", cached features: no train-time augmentation)" if args.cached_features else ")"),
                        linear_probe={**cfg.to_dict(), "label_fraction": args.label_fraction,
                                      "cached_features": args.cached_features})
    model = EncoderWithHead(encoder, fc.to(accelerator.device)).eval()
    aug = augment_cfg_for(encoder, image_size)
    crop_pct = float((getattr(encoder, "pretrained_cfg", None) or {}).get("crop_pct") or 0.875)
    resize = int(round(aug.image_size / crop_pct))
    chosen = crop_settings(args.crop_scale_ranges, center=args.center)
    results = crop_robustness(model, test, chosen, center_tf,
                              lambda scale: random_crop_transform(aug.image_size, scale, resize, aug.mean, aug.std,
                                                                  aug.interpolation),
                              seed=args.seed, batch_size=args.batch_size, num_workers=args.num_workers,
                              accelerator=accelerator)
    metrics: dict[str, float] = {}
    for name, acc in results.items():
        metrics[f"top1_{name}"] = 100 * acc["top1"]
    for name, acc in results.items():
        metrics[f"top5_{name}"] = 100 * acc["top5"]
    settings.update(tests=[s.name for s in chosen],
                    center_test=f"Resize(shorter side {resize}) + CenterCrop({aug.image_size}) (eval transform)",
                    random_test=f"Resize(({resize}, {resize})) + RandomResizedCrop({aug.image_size}, scale) per image, "
                                "no flip",
                    crop_scales=[list(s) for s in args.crop_scale_ranges], interpolation=aug.interpolation,
                    crop_seeding="torch RNG seeded per (seed, test index, image index)",
                    protocol_note="random-crop robustness test (LeOCLR Table 6)")
    info = split_info(args.train_split, num_train or 0, args.test_split, len(test), test,
                       num_classes=len(test.classes))
    if num_train is None:
        info.update(train_split=None, num_train=None)
    return metrics, settings, info


RUNNERS = {"finetune": run_finetune, "transfer": run_transfer, "crop-robustness": run_crop_robustness}
