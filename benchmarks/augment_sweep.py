"""LeOCLR Fig. 4: pre-train each recipe once per augmentation preset and evaluate the frozen encoders.

    python benchmarks/augment_sweep.py moco_v2_r18_digits leoclr_r18_digits \\
        --presets full no_color no_blur crop_flip crop_only --epochs 10 --markdown docs/results/augment_sweep.md

For every (recipe, preset) pair the recipe is trained with ``augment_preset=PRESET`` (ssl_zoo.recipe.
AUGMENT_PRESETS names what each keeps) by ``ssl_zoo.train.train`` and evaluated like benchmarks/compare.py
(k-NN k = 20 / 200 and the linear probe on cached features of the recipe's test split). One seed per run:
a comparison across presets claims nothing unless it is repeated with --seed 0 1 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # compare.py beside this file

import compare  # noqa: E402

import ssl_zoo  # noqa: E402
from ssl_zoo.recipe import AUGMENT_PRESETS, get_recipe, register_recipe  # noqa: E402


def sweep_recipes(recipes: Sequence[str], presets: Sequence[str], overrides: dict | None = None) -> list[str]:
    """Register ``RECIPE__PRESET`` for each pair (in this process) and return their names."""
    names = []
    for name in recipes:
        for preset in presets:
            if preset not in AUGMENT_PRESETS:
                raise SystemExit(f"error: unknown preset {preset!r}; choose from {', '.join(AUGMENT_PRESETS)}.")
            variant = get_recipe(name).with_overrides(**(overrides or {}), name=f"{name}__{preset}",
                                                      augment_preset=preset)
            register_recipe(variant, overwrite=True)
            names.append(variant.name)
    return names


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipes", nargs="+")
    p.add_argument("--presets", nargs="+", default=list(AUGMENT_PRESETS), help="default: every preset")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None)
    p.add_argument("--runs", default="runs/augment_sweep")
    p.add_argument("--markdown", required=True)
    p.add_argument("--reuse", action="store_true")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override for every run, e.g. --set arch=resnet50")
    args = p.parse_args(argv)
    from ssl_zoo.train import parse_overrides

    names = sweep_recipes(args.recipes, args.presets, parse_overrides(args.overrides))
    forwarded = [*names, "--seed", str(args.seed), "--runs", args.runs, "--markdown", args.markdown]
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size), ("--data", args.data)):
        if value is not None:
            forwarded += [flag, str(value)]
    if args.reuse:
        forwarded.append("--reuse")
    return compare.main(forwarded)


if __name__ == "__main__":
    ssl_zoo.list_models()  # the built-in recipes are registered before the variants
    sys.exit(main())
