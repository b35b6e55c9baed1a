"""``ssl-zoo demo``: MoCo v2 on the embedded digits, k-NN accuracy before and after.

Trains ``moco_v2_r18_digits`` (ResNet-18, 32 px, scikit-learn's 1,797 handwritten digits;
no download) through the normal training loop, then compares the weighted k-NN accuracy
(k = 20 and 200, T = 0.07, features of the "eval" view) of the encoder training starts from (same seed;
BatchNorm statistics recomputed on the training images, and with its initial statistics beside it:
``ssl_zoo.evaluation.baseline``) with the trained one on the digits test split.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # `ssl-zoo demo --help` must not wait for torch
    from torch import nn

DEMO_RECIPE = "moco_v2_r18_digits"
KS = (20, 200)
KNN_TEMPERATURE = 0.07


def knn_table(encoder: nn.Module, recipe: Any, num_workers: int = 0) -> dict[str, float]:
    """k-NN top-1 accuracy (%) on the digits test split, the train split as memory bank."""
    from .evaluation import knn_accuracy, recipe_split_features

    train_f, train_y, test_f, test_y = recipe_split_features(encoder, recipe, num_workers=num_workers)
    return {f"knn{k}": 100.0 * knn_accuracy(train_f, train_y, test_f, test_y, k=k, temperature=KNN_TEMPERATURE)
            for k in KS}


def format_table(before: dict[str, float], after: dict[str, float]) -> str:
    rows = [("encoder", *[f"k-NN k={k}" for k in KS]),
            ("untrained, same start (BN stats recomputed)", *[f"{before[f'knn{k}']:.1f}%" for k in KS])]
    if all(f"knn{k}_init_bn" in before for k in KS):
        rows.append(("untrained, initial BN stats", *[f"{before[f'knn{k}_init_bn']:.1f}%" for k in KS]))
    rows += [("MoCo v2 trained", *[f"{after[f'knn{k}']:.1f}%" for k in KS]),
             ("gain over the untrained encoder", *[f"{after[f'knn{k}'] - before[f'knn{k}']:+.1f}" for k in KS])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# The demo's own record in its run folder: what a plain `ssl-zoo demo --resume` needs to continue the same run
# (settings and the "before" numbers), and what tells a demo run from another run (which is never replaced
# without --overwrite).
DEMO_RECORD = "demo.json"


def _read_record(output: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((output / DEMO_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("recipe") == DEMO_RECIPE else None


def _write_record(output: Path, record: dict[str, Any]) -> None:
    from .export import atomic_write_bytes

    output.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output / DEMO_RECORD, (json.dumps(record, indent=2) + "\n").encode())


def claim_demo_folder(output: Path, *, resume: bool, overwrite: bool) -> tuple[dict[str, Any] | None, bool]:
    """Check ``output`` before any work, with the rules of ``ssl-zoo train`` (``ssl_zoo.runfolder``): returns the
    demo record to resume from (None for a new run) and whether train() must replace the folder's run.

    A finished demo run is replaced (the demo is a fixed, seeded run that owns its folder); an unfinished one
    needs --resume or --overwrite; any other run is refused unless --overwrite.
    """
    from .runfolder import RunFolderError, check_run_folder, existing_run_files

    record = _read_record(output)
    found = existing_run_files(output) if output.is_dir() else []
    if resume:
        check_run_folder(output, resume=True, overwrite=overwrite)  # --resume with --overwrite contradict
        if record is None or not found:
            what = "another run" if found else "no run"
            raise RunFolderError(f"{output} holds {what}, not a stopped demo run ({DEMO_RECORD} and "
                                 f"checkpoint.pt); start one with `ssl-zoo demo --output {output}`.")
        return record, False
    if found and record is None and not overwrite:
        raise RunFolderError(f"{output} holds a run that is not a demo run ({', '.join(found)}); pass --overwrite "
                             f"to replace it, or choose another --output.")
    if found and record is not None and record.get("finished"):
        return None, True
    check_run_folder(output, resume=False, overwrite=overwrite)  # an unfinished demo: --resume or --overwrite
    return None, overwrite


def untrained_knn(recipe: Any, seed: int) -> dict[str, float]:
    """The "before" row: k-NN of the recipe's own untrained encoder (same seed as training), BatchNorm statistics
    recomputed on the training images, with the initial-statistics numbers beside it (``*_init_bn``)."""
    from .evaluation.baseline import untrained_scores

    return untrained_scores(recipe, seed, lambda encoder: knn_table(encoder, recipe, num_workers=0))


def format_before(before: dict[str, float], seed: int) -> str:
    init = (" (initial BatchNorm statistics: " + ", ".join(f"k={k} {before[f'knn{k}_init_bn']:.1f}%" for k in KS)
            + ")") if all(f"knn{k}_init_bn" in before for k in KS) else ""
    return (f"k-NN of the untrained encoder (seed {seed}, BatchNorm statistics recomputed on the training images) "
            f"on the digits test split: " + ", ".join(f"k={k} {before[f'knn{k}']:.1f}%" for k in KS) + init)


def run_demo(epochs: int | None = None, output: str | Path = "runs/demo", seed: int | None = None,
             num_workers: int | None = None, batch_size: int | None = None, progress_bar: bool = True,
             overrides: dict[str, Any] | None = None, max_steps: int | None = None, resume: bool = False,
             overwrite: bool = False) -> dict[str, Any]:
    """Train the demo recipe and return ``{"before", "after", "train", "output", "seconds", "interrupted"}``.

    Stopped by Ctrl-C / SIGTERM, it returns with ``interrupted`` True (checkpoint saved, ``after`` None);
    ``resume=True`` continues the demo run in ``output`` with its recorded settings (``epochs`` / ``max_steps``
    given again set a new length, as for ``ssl-zoo train --resume``).
    """
    from accelerate.utils import set_seed

    from .errors import UserInputError
    from .factory import create_method
    from .train import resolve_recipe, train

    output = Path(output)
    record, replace = claim_demo_folder(output, resume=resume, overwrite=overwrite)
    if record is not None:  # resuming: the recorded settings make the same recipe and initial weights
        if seed is not None and seed != record["seed"]:
            raise UserInputError(f"The demo run in {output} was trained with --seed {record['seed']}, not {seed}; "
                                 f"drop --seed to continue it, or start a new run with --overwrite.")
        if overrides and overrides != ast.literal_eval(record["overrides"]):
            raise UserInputError(f"The demo run in {output} was trained with --set {record['overrides']}; drop "
                                 f"--set to continue it, or start a new run with --overwrite.")
        seed, batch_size = record["seed"], record["batch_size"] if batch_size is None else batch_size
        overrides = ast.literal_eval(record["overrides"])
        epochs = record["epochs"] if epochs is None else epochs
        max_steps = record["max_steps"] if max_steps is None else max_steps
    seed = 0 if seed is None else seed
    recipe = resolve_recipe(DEMO_RECIPE, epochs=epochs, batch_size=batch_size, overrides=overrides)
    set_seed(seed)  # train() seeds the same way before building the method: identical initial weights
    method = create_method(recipe)
    workers = recipe.train.num_workers if num_workers is None else num_workers
    before = record.get("before") if record is not None else None
    if before is None:
        print(f"k-NN of the untrained encoder (seed {seed}) on the digits test split ...")
        before = untrained_knn(recipe, seed)
    print(format_before(before, seed), flush=True)
    record = {"recipe": DEMO_RECIPE, "seed": seed, "epochs": epochs, "batch_size": batch_size, "max_steps": max_steps,
              "overrides": repr(overrides or {}), "before": before, "finished": False}
    _write_record(output, record)
    start = time.perf_counter()
    result = train(recipe, method=method, output=output, seed=seed, num_workers=workers, progress_bar=progress_bar,
                   max_steps=max_steps, overwrite=replace, resume=resume)
    seconds = time.perf_counter() - start
    out = {"before": before, "after": None, "train": result, "output": str(output), "seconds": seconds,
           "recipe": recipe, "interrupted": bool(result["interrupted"])}
    if out["interrupted"]:
        return out
    after = knn_table(method.encoder, recipe, num_workers=0)
    # Record the k-NN numbers next to the weights.
    from .export import read_encoder_config, save_encoder
    exported = read_encoder_config(output)["ssl_zoo"]
    evaluated = {"dataset": recipe.dataset, "split": "test",
                 "protocol": f"k-NN (T={KNN_TEMPERATURE:g}, eval view, train split as the bank)"}
    # the export's own metrics (steps and epochs done) stay beside the k-NN numbers
    save_encoder(method.encoder, output, recipe, metrics={**(exported.get("metrics") or {}),
                                                          **{f"{k}_before": v for k, v in before.items()},
                                                          **after, "final_loss": result["final"].get("loss")},
                 extra={"train": exported.get("train", {}), "progress": exported.get("progress"), "eval": evaluated,
                        "demo": {"seed": seed, "train_seconds": round(seconds, 1)}})
    _write_record(output, {**record, "after": after, "finished": True})
    return {**out, "after": after}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--output", default="runs/demo", help="run folder (weights, checkpoint, log)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the stopped demo run in --output with its recorded settings")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a run in --output that is not a finished demo run (a finished one is replaced "
                             "anyway)")
    parser.add_argument("--seed", type=int, default=None, help="training and evaluation seed (default 0)")
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps (smoke test)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override, as for `ssl-zoo train` (e.g. --set base_lr=0.12)")
    parser.add_argument("--markdown", default=None, metavar="FILE",
                        help="also write the table, the machine and this command to FILE (docs/results/)")


def run_cli(args: argparse.Namespace) -> int:
    from .errors import SslZooError, report_user_error
    from .train import parse_overrides

    try:
        out = run_demo(epochs=args.epochs, output=args.output, seed=args.seed, num_workers=args.num_workers,
                       batch_size=args.batch_size, max_steps=args.max_steps,
                       overrides=parse_overrides(args.overrides), resume=args.resume, overwrite=args.overwrite)
    # as `ssl-zoo train`: SslZooError, a wrong --set (ValueError / TypeError), --output unusable (OSError)
    except (SslZooError, ValueError, TypeError, KeyError, OSError) as exc:
        return report_user_error(exc)
    if out["interrupted"]:
        print(f"Demo stopped at step {out['train']['step']}; continue it with: ssl-zoo demo --output {args.output} "
              f"--resume", file=sys.stderr)
        return 3
    recipe = out["recipe"]
    heading = (f"MoCo v2 ({recipe.backbone.arch}, {recipe.image_size} px) on the embedded digits, "
               f"{out['train']['epoch']} epochs ({out['train']['step']} steps) in {out['seconds'] / 60:.1f} min; "
               f"k-NN top-1 on the digits test split (540 images), T={KNN_TEMPERATURE}:")
    table = format_table(out["before"], out["after"])
    print(f"\n{heading}\n\n{table}")
    if args.markdown:
        from .report import command_line, machine_line
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(f"{heading}\n\n{table}\n\n{machine_line()}\n\nCommand:\n\n"
                                       f"```\n{command_line('ssl-zoo')}\n```\n")
    print(f"\nWeights: {Path(out['output']) / 'model.safetensors'} (+ config.json); "
          f"load with ssl_zoo.create_model({DEMO_RECIPE!r}, checkpoint={out['output']!r}).")
    return 0


__all__ = ["run_demo", "knn_table", "untrained_knn", "format_table", "format_before", "claim_demo_folder",
           "DEMO_RECORD", "configure_parser", "run_cli"]
