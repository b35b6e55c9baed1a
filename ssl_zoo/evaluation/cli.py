"""``ssl-zoo eval linear|retrieval|knn|finetune|transfer|crop-robustness`` and ``benchmarks/*.py``: one code path.

Each run loads an encoder, builds the dataset splits with the evaluation transforms,
computes the protocol's metrics (under ``accelerate launch``: features extracted in
parallel, metrics computed once on the main process) and writes a JSON result plus a
Markdown table row. Numbers in reports are percentages.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ..parsers.eval import configure_parser, configure_protocol_parser
from ..report import append_markdown_row, build_result, markdown_header, markdown_row, write_json
from ..run_readme import update_run_readme
from .splits import eval_split, num_classes_of, split_info

# The encoder transforms (ssl_zoo.transforms: eval_transform, linear_train_transform, augment_cfg_for) are imported
# where used: importing torchvision here changed how the 2-process test's workers exit (its rendezvous file vanished).

if TYPE_CHECKING:
    from accelerate import Accelerator

CACHED_FEATURES_NOTE = ("cached features: train features extracted once with the eval transform "
                        "(Resize + CenterCrop), so no train-time augmentation (RandomResizedCrop + flip) "
                        "unlike the MoCo protocol; same classifier, optimiser and schedule")


# ---------------------------------------------------------------------------------------------- model
def load_encoder(spec: str, pretrained: bool = False,
                 checkpoint: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The encoder named by ``spec`` and a description of where it came from.

    ``spec`` is a recipe name (weights with ``pretrained`` or ``checkpoint``, else random init),
    ``hf-hub:org/repo[@rev]`` (its weights), or a local run / model folder holding
    ``model.safetensors`` + ``config.json``.
    """
    from ..weights import build_model, resolve_source

    if spec.startswith("hf-hub:"):
        source = resolve_source(spec, pretrained=checkpoint is None, checkpoint=checkpoint)
        return build_model(source), {"name": spec, "source": "hf-hub", "checkpoint": checkpoint,
                                     "weights_file": str(source.weights) if source.weights else None}
    path = Path(spec).expanduser()
    if path.exists():
        if checkpoint is not None:
            raise ValueError(f"--model {spec} is already a local folder; drop --checkpoint.")
        return _encoder_from_dir(path)
    from ..recipe import list_models

    if spec not in list_models():
        from ..registry import did_you_mean

        hint = did_you_mean(spec, list_models(), cutoff=0.5)
        raise ValueError(f"--model {spec!r} is neither a recipe name, an 'hf-hub:org/repo' id nor an existing "
                         f"folder.{hint} `ssl-zoo list` shows the recipes.")
    resolved = resolve_source(spec, pretrained=pretrained, checkpoint=checkpoint)
    source = "checkpoint" if checkpoint else ("pretrained" if pretrained else "random-init")
    return build_model(resolved), {"name": spec, "source": source, "checkpoint": checkpoint,
                                   "weights_file": str(resolved.weights) if resolved.weights else None}


def _encoder_from_dir(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    from ..export import CONFIG_NAME, WEIGHTS_NAME
    from ..weights import build_model, local_source

    if path.is_file():
        raise ValueError(f"--model {path} is a weights file; pass the folder holding {WEIGHTS_NAME} + {CONFIG_NAME}, "
                         f"or a recipe name with --checkpoint {path}.")
    source = local_source(path)  # an exported model / run folder (or a run's training state)
    name = (source.config or {}).get("ssl_zoo", {}).get("recipe") or (source.recipe.name if source.recipe else None)
    model_dir = source.weights.parent if source.weights is not None else path
    return build_model(source), {"name": name or model_dir.name, "source": "local", "checkpoint": str(model_dir),
                                 "weights_file": str(source.weights) if source.weights else None}


# ------------------------------------------------------------------------------------------- running
def run_cli(args: argparse.Namespace) -> int:
    """Run one benchmark; the main process writes the JSON / Markdown. Returns the exit code."""
    from accelerate import Accelerator

    from ..distributed import adopt_cpu_launch, check_launch, leave_together_at_exit
    from ..errors import one_line, report_user_error

    try:
        _validate(args)
    except _user_errors() as exc:
        return report_user_error(exc)
    adopt_cpu_launch()  # torchrun on a CPU machine: gloo, as under `accelerate launch` (ssl_zoo.distributed)
    accelerator = Accelerator(cpu=args.cpu)
    try:
        check_launch(accelerator.num_processes)
    except _user_errors() as exc:
        return report_user_error(exc)
    try:
        result = run_benchmark(args, accelerator)
    except _user_errors() as exc:
        accelerator.print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    if accelerator.is_main_process:
        row = markdown_row(result)
        print(markdown_header(args.protocol))
        print(row)
        if args.output:
            write_json(Path(args.output), result)
            print(f"wrote {args.output}")
        update_run_readme(args.model, result)  # a training run folder's README gets the row (else nothing)
        if args.markdown:
            append_markdown_row(Path(args.markdown), row, header=markdown_header())
    accelerator.wait_for_everyone()
    leave_together_at_exit()
    return 0


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the arguments or the files (reported in one line); anything else is a bug."""
    from ..errors import SslZooError

    return ValueError, FileNotFoundError, SslZooError


def _validate(args: argparse.Namespace) -> None:
    from ..errors import UserInputError

    if args.batch_size < 1 or args.num_workers < 0 or args.chunk_size < 1:
        raise UserInputError("--batch-size and --chunk-size must be >= 1 and --num-workers >= 0.")
    if args.image_size is not None and args.image_size < 8:
        raise UserInputError(f"--image-size {args.image_size} is too small (>= 8).")
    if not 0.0 < args.label_fraction <= 1.0:
        raise UserInputError(f"--label-fraction must be in (0, 1], got {args.label_fraction}.")
    if args.label_fraction < 1.0 and args.protocol not in ("linear", "finetune", "crop-robustness"):
        raise UserInputError("--label-fraction applies to the linear probe and fine-tuning only.")
    if any(k < 1 for k in args.k or ()):
        raise UserInputError(f"--k values must be >= 1, got {args.k}.")
    if args.holdout is not None and not 0.0 < args.holdout < 1.0:
        raise UserInputError(f"--holdout is a fraction in (0, 1), got {args.holdout}.")
    if args.holdout and args.train_split == args.test_split:
        raise UserInputError("--holdout needs different --train-split and --test-split names for its two parts.")
    if args.protocol == "knn" and args.train_split == args.test_split:
        raise UserInputError(f"k-NN with --train-split = --test-split = {args.train_split!r} lets every image find "
                             f"itself (near 100% top-1). Use a held-out --test-split.")
    from .finetune_cli import fill_defaults

    fill_defaults(args)


def run_benchmark(args: argparse.Namespace, accelerator: Accelerator) -> dict[str, Any]:
    """Compute one protocol and return the result record (see docs/benchmarks.md for the schema)."""
    from accelerate.utils import set_seed

    start = time.time()
    set_seed(args.seed)
    resolve_eval_data(args, accelerator.print)
    eval_split(args, args.test_split, transform=None)  # a missing or malformed folder fails before any download
    encoder, model_info = load_encoder(args.model, pretrained=args.pretrained, checkpoint=args.checkpoint)
    model_info.update(architecture=type(encoder).__name__ if not getattr(encoder, "pretrained_cfg", None)
                      else encoder.pretrained_cfg.get("architecture", type(encoder).__name__),
                      num_features=int(getattr(encoder, "num_features", 0)))
    # bind the result to the weights it measures, before any protocol trains them (fine-tuning)
    from ..state_dicts import weights_digests

    model_info.update(weights_digests(encoder.state_dict(), model_info.pop("weights_file", None)))
    if model_info["source"] == "random-init":
        accelerator.print(f"note: evaluating {args.model} with random weights (add --pretrained or --checkpoint).")
    from ..transforms import augment_cfg_for

    image_size = augment_cfg_for(encoder, args.image_size).image_size
    encoder.to(accelerator.device)
    from .finetune_cli import RUNNERS

    runner = {"linear": _run_linear, "retrieval": _run_retrieval, "knn": _run_knn, **RUNNERS}[args.protocol]
    metrics, settings, dataset_info = runner(args, encoder, image_size, accelerator)
    settings.update(image_size=image_size, batch_size=args.batch_size, seed=args.seed)
    from ..data.fingerprint import splits_fingerprint

    # the splits read from disk: --holdout carves both parts out of the train split
    splits = ["train"] if getattr(args, "holdout", None) else (
        [args.test_split] if args.protocol == "retrieval" else [args.train_split, args.test_split])
    dataset = {"name": args.dataset, "root": args.data,
               "fingerprint": splits_fingerprint(args.dataset, args.data, splits),
               **dataset_info}
    return build_result(args.protocol, metrics, model_info, dataset, settings, wall_time_s=time.time() - start,
                        world_size=accelerator.num_processes)


# ------------------------------------------------------------------------- which data (issue 20)
def resolve_eval_data(args: argparse.Namespace, log: Callable[..., Any] = print) -> None:
    """Fill ``args.dataset`` / ``args.data`` and say which: given ``--dataset`` as asked (an embedded dataset
    refuses ``--data``); else ``--data``'s layout (the model's dataset's own, a class tree, or unlabelled);
    else the data the model trained on (its config.json, checkpoint or recipe); else the embedded digits.
    Unlabelled images end in a one-line "needs labels" error."""
    from ..data import detect_layout, get_dataset_info
    from ..errors import UserInputError

    kind = None
    if args.dataset is not None:
        origin = "--dataset"
        if args.data is not None and not get_dataset_info(args.dataset).reads_folder:
            raise UserInputError(f"--data {args.data}: dataset {args.dataset!r} reads no folder (it is built in "
                                 f"memory). Drop --data, or drop --dataset to evaluate on the folder's own images.")
        if args.dataset in ("imagefolder", "unlabelled_images") and args.data is not None:
            kind = detect_layout(args.data).kind
    else:
        record, where = model_data_record(args)
        if args.data is not None:
            layout = detect_layout(args.data, record["dataset"] if record else None,
                                   split="train" if getattr(args, "holdout", None) else args.train_split)
            args.dataset, kind, origin = layout.dataset, layout.kind, f"--data: {layout.describe()}"
        elif record is not None:
            args.dataset, kind, origin = record["dataset"], record.get("kind"), f"the training data of {where}"
            path = record.get("path")
            if get_dataset_info(args.dataset).reads_folder:
                if not path or not Path(path).exists():
                    raise UserInputError(
                        f"{args.model} was trained on {args.dataset!r}"
                        + (f" in {path}, which is not on this machine" if path else "")
                        + f": pass --data ROOT (`ssl-zoo datasets {args.dataset}` shows its layout), or another "
                          f"--dataset NAME.")
                args.data = path
        else:
            args.dataset, origin = "digits", "the default: the model records no training data"
    log(f"eval: dataset {args.dataset!r}" + (f", data {args.data}" if args.data else "") + f" ({origin})")
    if kind == "unlabelled" or args.dataset == "unlabelled_images":
        raise UserInputError(
            f"{args.protocol} needs labels, but {args.data} is a folder of unlabelled images (no class folders). "
            f"Evaluate on a class tree (<class>/*.jpg, >= 2 classes) with --data TREE --holdout 0.2, or on a "
            f"labelled dataset with --dataset NAME.")


def model_data_record(args: argparse.Namespace) -> tuple[dict[str, Any] | None, str]:
    """What the model named by ``args.model`` trained on (``kind``, ``dataset``, ``path``), and where that is
    written: a run / export folder's config.json (``ssl_zoo.data``, or ``ssl_zoo.dataset`` + ``train.data``), an
    unfinished run's checkpoint, a Hub repo's config.json (its path is another machine's: dropped) or a recipe.
    None when nothing says (an unreadable folder is reported later, by the model loader)."""
    spec = args.model
    if spec.startswith("hf-hub:"):
        from ..errors import SslZooError
        from ..weights import resolve_source

        try:
            config = resolve_source(spec).config or {}
        except (SslZooError, OSError, ValueError):  # load_encoder reports a broken or unreachable repo in one line
            return None, spec
        record = _record_from_config(config)
        if record is not None:
            record["path"] = None
        return record, spec
    path = Path(spec).expanduser()
    if path.exists():
        return _record_from_folder(path), str(path)
    from ..recipe import list_models

    if spec in list_models():
        from ..recipe import get_recipe

        return {"kind": "dataset", "dataset": get_recipe(spec).dataset, "path": None}, f"recipe {spec}"
    return None, spec


def _record_from_folder(path: Path) -> dict[str, Any] | None:
    from ..checkpoint import CHECKPOINT_NAME, load_checkpoint
    from ..errors import SslZooError
    from ..export import read_encoder_config
    from ..weights import find_model_dir

    try:
        return _record_from_config(read_encoder_config(find_model_dir(path)))
    except (SslZooError, OSError, ValueError):
        pass
    state = path if path.is_file() else path / CHECKPOINT_NAME
    if not state.is_file():
        return None
    try:
        stored = load_checkpoint(state)
    except (SslZooError, OSError, ValueError, RuntimeError):
        return None
    dataset = (stored.get("recipe") or {}).get("dataset")
    run = stored.get("run") or {}
    return _record(dataset, run.get("data_kind"), run.get("data")) if dataset else None


def _record_from_config(config: dict[str, Any]) -> dict[str, Any] | None:
    info = config.get("ssl_zoo") or {}
    if isinstance(info.get("data"), dict) and info["data"].get("dataset"):
        return dict(info["data"])
    if not info.get("dataset"):
        return None
    return _record(info["dataset"], None, (info.get("train") or {}).get("data"))


def _record(dataset: str, kind: str | None, path: str | None) -> dict[str, Any]:
    guessed = {"imagefolder": "class_tree", "unlabelled_images": "unlabelled"}.get(dataset, "dataset")
    return {"kind": kind or guessed, "dataset": dataset, "path": path}


def _run_knn(args, encoder, image_size, accelerator):
    from ..transforms import eval_transform
    from .features import extract_features
    from .metrics import knn_accuracy

    transform = eval_transform(encoder, image_size)
    train = eval_split(args, args.train_split, transform)
    test = eval_split(args, args.test_split, transform)
    if args.k is None:  # the defaults adapt to a small bank; an explicit k never changes silently
        from .metrics import DEFAULT_KNN_K, clamp_k

        args.k, note = clamp_k(DEFAULT_KNN_K, len(train))
        if note:
            accelerator.print(f"note: {note} (split {args.train_split!r}).")
    if max(args.k) > len(train):
        from ..errors import UserInputError
        raise UserInputError(f"--k {max(args.k)} is larger than the k-NN bank ({len(train)} images of split "
                             f"{args.train_split!r}). Use k <= {len(train)}.")
    per_process = _per_process_batch(args.batch_size, accelerator)
    train_f, train_l = extract_features(encoder, train, per_process, args.num_workers, accelerator=accelerator)
    test_f, test_l = extract_features(encoder, test, per_process, args.num_workers, accelerator=accelerator)
    metrics: dict[str, float] = {}
    if accelerator.is_main_process:  # computed once; the other processes only helped extract
        num_classes = int(max(train_l.max(), test_l.max())) + 1
        for k in args.k:
            metrics[f"top1_k{k}"] = 100 * knn_accuracy(train_f, train_l, test_f, test_l, k=k,
                                                       temperature=args.temperature, num_classes=num_classes,
                                                       chunk_size=args.chunk_size)
    settings = {"k": list(args.k), "temperature": args.temperature, "similarity": "cosine",
                "votes": "exp(s / T)", "transform": "eval (Resize + CenterCrop)"}
    return metrics, settings, split_info(args.train_split, len(train), args.test_split, len(test), train,
                                          holdout=args.holdout, seed=args.seed)


def _run_retrieval(args, encoder, image_size, accelerator):
    from ..transforms import eval_transform
    from .features import extract_features
    from .metrics import queries_without_positive, retrieval_metrics

    test = eval_split(args, args.test_split, eval_transform(encoder, image_size))
    features, labels = extract_features(encoder, test, _per_process_batch(args.batch_size, accelerator),
                                        args.num_workers, accelerator=accelerator)
    metrics: dict[str, float] = {}
    settings = {"similarity": "cosine (L2-normalised)", "queries": "every test image",
                "gallery": "the rest of the test set", "ties": "broken by dataset index",
                "no_positive_queries": "miss for rank-k, excluded from mAP",
                "transform": "eval (Resize + CenterCrop)"}
    if accelerator.is_main_process:
        metrics = {k: 100 * v for k, v in retrieval_metrics(features, labels, chunk_size=args.chunk_size).items()}
        settings["num_queries_without_positive"] = queries_without_positive(labels)
    info = {"test_split": args.test_split, "num_test": len(test), "num_classes": num_classes_of(test)}
    if args.holdout:
        info["holdout"] = {"fraction": args.holdout, "seed": args.seed, "from_split": "train", "stratified": True}
    return metrics, settings, info


def _run_linear(args, encoder, image_size, accelerator):
    from ..transforms import eval_transform, linear_train_transform
    from .features import extract_features
    from .linear import LinearProbeCfg, dataset_num_classes, linear_probe, linear_probe_on_features

    cfg = LinearProbeCfg(epochs=args.epochs, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                         milestones=tuple(args.milestones), batch_size=args.batch_size, seed=args.seed)
    test_tf = eval_transform(encoder, image_size)
    train_tf = test_tf if args.cached_features else linear_train_transform(encoder, image_size)
    train = eval_split(args, args.train_split, train_tf, label_fraction=args.label_fraction)
    test = eval_split(args, args.test_split, test_tf)
    num_classes = dataset_num_classes(train)
    log = print if accelerator.is_main_process else None
    every = max(1, cfg.epochs // 10)
    metrics: dict[str, float] = {}
    if args.cached_features:
        per_process = _per_process_batch(args.batch_size, accelerator)
        train_f, train_l = extract_features(encoder, train, per_process, args.num_workers, accelerator=accelerator)
        test_f, test_l = extract_features(encoder, test, per_process, args.num_workers, accelerator=accelerator)
        if accelerator.is_main_process:
            out = linear_probe_on_features(train_f, train_l, test_f, test_l, cfg=cfg, num_classes=num_classes,
                                           device=accelerator.device, log=log, log_every=every)
            metrics = {"top1": 100 * out["top1"], "top5": 100 * out["top5"], "train_loss": out["train_loss"]}
    else:
        out = linear_probe(encoder, train, test, cfg=cfg, num_classes=num_classes, num_workers=args.num_workers,
                           accelerator=accelerator, log=log, log_every=every)
        metrics = {"top1": 100 * out["top1"], "top5": 100 * out["top5"], "train_loss": out["train_loss"]}
    settings = {**cfg.to_dict(), "label_fraction": args.label_fraction, "cached_features": args.cached_features,
                "optimizer": "SGD", "classifier_init": f"N(0, {cfg.init_std}) weights, zero bias",
                "encoder": "frozen, eval mode", "reported_epoch": "last",
                "train_transform": "eval (Resize + CenterCrop)" if args.cached_features
                else "RandomResizedCrop + horizontal flip",
                "test_transform": "eval (Resize + CenterCrop)",
                "protocol_note": CACHED_FEATURES_NOTE if args.cached_features else "MoCo linear evaluation protocol"}
    return metrics, settings, split_info(args.train_split, len(train), args.test_split, len(test), train,
                                          num_classes=num_classes, holdout=args.holdout, seed=args.seed)


def _per_process_batch(batch_size: int, accelerator: Accelerator) -> int:
    return max(1, batch_size // accelerator.num_processes)


def main(argv: Sequence[str] | None = None, protocol: str | None = None) -> int:
    """Entry point of the benchmark scripts: ``main(protocol="linear")`` parses the remaining arguments."""
    script = f"benchmarks/{protocol.replace('-', '_')}.py" if protocol else None  # the file's own name
    parser = argparse.ArgumentParser(prog=script or "ssl-zoo eval",
                                     description=__doc__.splitlines()[0])
    if protocol is None:
        configure_parser(parser)
    else:  # benchmarks/PROTOCOL.py: that protocol's options only
        configure_protocol_parser(parser, protocol)
    return run_cli(parser.parse_args(sys.argv[1:] if argv is None else argv))
