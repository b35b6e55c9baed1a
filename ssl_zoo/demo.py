"""``ssl-zoo demo``: MoCo v2 on the embedded digits, k-NN accuracy before and after.

Trains ``moco_v2_r18_digits`` (ResNet-18, 32 px, scikit-learn's 1,797 handwritten digits;
no download) through the normal training loop, then compares the weighted k-NN accuracy
(k = 20 and 200, T = 0.07, features of the "eval" view) of the randomly initialised encoder
(same seed) with the trained one on the digits test split.
"""
from __future__ import annotations

import argparse
import copy
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
            ("random init (same seed)", *[f"{before[f'knn{k}']:.1f}%" for k in KS]),
            ("MoCo v2 trained", *[f"{after[f'knn{k}']:.1f}%" for k in KS]),
            ("gain", *[f"{after[f'knn{k}'] - before[f'knn{k}']:+.1f}" for k in KS])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def run_demo(epochs: int | None = None, output: str | Path = "runs/demo", seed: int = 0,
             num_workers: int | None = None, batch_size: int | None = None, progress_bar: bool = True,
             overrides: dict[str, Any] | None = None, max_steps: int | None = None) -> dict[str, Any]:
    """Train the demo recipe and return ``{"before", "after", "train", "output", "seconds"}``."""
    from accelerate.utils import set_seed

    from .factory import create_method
    from .train import resolve_recipe, train

    recipe = resolve_recipe(DEMO_RECIPE, epochs=epochs, batch_size=batch_size, overrides=overrides)
    set_seed(seed)  # train() seeds the same way before building the method: identical initial weights
    method = create_method(recipe)
    initial = copy.deepcopy(method.encoder)
    workers = recipe.train.num_workers if num_workers is None else num_workers
    print(f"k-NN of the randomly initialised encoder (seed {seed}) on the digits test split ...")
    before = knn_table(initial, recipe, num_workers=0)
    start = time.perf_counter()
    # The demo is a fixed, seeded run that owns its folder: re-running it replaces the previous demo run.
    result = train(recipe, method=method, output=output, seed=seed, num_workers=workers, progress_bar=progress_bar,
                   max_steps=max_steps, overwrite=True)
    seconds = time.perf_counter() - start
    after = knn_table(method.encoder, recipe, num_workers=0)
    # Record the k-NN numbers next to the weights.
    from .export import read_encoder_config, save_encoder
    train_info = read_encoder_config(output)["ssl_zoo"].get("train", {})
    save_encoder(method.encoder, output, recipe, metrics={**{f"{k}_before": v for k, v in before.items()},
                                                          **after, "final_loss": result["final"].get("loss")},
                 extra={"train": train_info, "demo": {"seed": seed, "train_seconds": round(seconds, 1)}})
    return {"before": before, "after": after, "train": result, "output": str(output), "seconds": seconds,
            "recipe": recipe}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's epochs")
    parser.add_argument("--output", default="runs/demo", help="run folder (weights, checkpoint, log)")
    parser.add_argument("--seed", type=int, default=0, help="training and evaluation seed (default 0)")
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps (smoke test)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override, as for `ssl-zoo train` (e.g. --set base_lr=0.12)")
    parser.add_argument("--markdown", default=None, metavar="FILE",
                        help="also write the table, the machine and this command to FILE (docs/results/)")


def run_cli(args: argparse.Namespace) -> int:
    from .train import parse_overrides

    out = run_demo(epochs=args.epochs, output=args.output, seed=args.seed, num_workers=args.num_workers,
                   batch_size=args.batch_size, max_steps=args.max_steps, overrides=parse_overrides(args.overrides))
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


__all__ = ["run_demo", "knn_table", "format_table", "configure_parser", "run_cli"]
