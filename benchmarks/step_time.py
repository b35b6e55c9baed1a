"""Optimiser-step time of several recipes at the same batch, interleaved so machine load hits them alike.

    python benchmarks/step_time.py moco_v2_r18_digits moco_v2_synth_r18_digits --batch-size 64 --steps 5 \\
        --markdown docs/results/synth_digits_steptime.md
    python benchmarks/step_time.py moco_v2_r18_digits leoclr_r18_digits --compare-bn-groups --image-size 64 \\
        --markdown docs/results/bn_groups_64px.md

``--compare-bn-groups`` times each recipe twice: with its BatchNorm groups (``bn_group_size``, split
inside one pass by ``SplitBatchNorm2d``) and with one group per batch (``bn_group_size=None``).
``--set KEY=VALUE`` and ``--image-size`` override every recipe.

One step = forward (the method's whole loss) + backward + SGD step + ``after_optimizer_step``, on
random views at the recipe's image size. Reports the median over ``--steps`` timed steps after one
warm-up step, and each recipe's ratio to the first one.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from ssl_zoo.factory import create_method
from ssl_zoo.recipe import Recipe, get_recipe
from ssl_zoo.report import command_line, machine_info, machine_line
from ssl_zoo.train import build_param_groups, parse_overrides


def time_steps(recipes: dict[str, Recipe] | list[str], batch: int, steps: int, seed: int = 0) -> dict[str, float]:
    """Median step time per label; ``recipes`` maps a label to a recipe (or is a list of recipe names)."""
    if not isinstance(recipes, dict):
        recipes = {name: get_recipe(name) for name in recipes}
    methods = {}
    for name, recipe in recipes.items():
        torch.manual_seed(seed)
        method = create_method(recipe).train()
        opt = torch.optim.SGD(build_param_groups(method, 0.01, 0.0), lr=0.01, momentum=0.9)
        methods[name] = (method, opt)
    times: dict[str, list[float]] = {n: [] for n in recipes}
    for rep in range(steps + 1):  # rep 0 is warm-up
        for name, (method, opt) in methods.items():
            size = recipes[name].image_size
            views = [torch.randn(batch, 3, size, size) for _ in method.view_names]
            start = time.perf_counter()
            method(views)["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            method.after_optimizer_step(0.5)
            if rep:
                times[name].append(time.perf_counter() - start)
    return {n: statistics.median(t) for n, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipes", nargs="+")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--markdown", type=Path, default=None)
    p.add_argument("--image-size", type=int, default=None, help="override every recipe's image size")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override applied to every recipe")
    p.add_argument("--compare-bn-groups", action="store_true",
                   help="time each recipe with its BatchNorm groups and with one group (bn_group_size=None)")
    args = p.parse_args(argv)
    overrides = parse_overrides(args.overrides)
    if args.image_size:
        overrides["image_size"] = args.image_size
    recipes: dict[str, Recipe] = {}
    for name in args.recipes:
        recipe = get_recipe(name).with_overrides(**overrides)
        if args.compare_bn_groups:
            group = recipe.method_args.get("bn_group_size")
            recipes[f"{name} (BN groups of {group})"] = recipe
            recipes[f"{name} (one BN group)"] = recipe.with_overrides(bn_group_size=None)
        else:
            recipes[name] = recipe
    medians = time_steps(recipes, args.batch_size, args.steps)
    first = next(iter(medians))
    base = medians[first]
    size = next(iter(recipes.values())).image_size
    lines = [f"Median optimiser-step time at batch {args.batch_size}, {size} px ({args.steps} timed steps after "
             f"1 warm-up, recipes interleaved):", "", f"| recipe | median step (s) | images/s | vs `{first}` |",
             "|---|---|---|---|"]
    lines += [f"| `{n}` | {t:.3f} | {args.batch_size / t:.1f} | {t / base:.2f}x |" for n, t in medians.items()]
    lines += ["", machine_line(), "", "Command:", "", f"```\n{command_line('python benchmarks/step_time.py', argv)}\n```", ""]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
        args.markdown.with_suffix(".json").write_text(json.dumps(
            {"batch_size": args.batch_size, "image_size": size, "steps": args.steps, "median_s": medians,
             "machine": machine_info()},
            indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
