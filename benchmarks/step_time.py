"""Optimiser-step time of several recipes at the same batch, interleaved so machine load hits them alike.

    python benchmarks/step_time.py moco_v2_r18_digits moco_v2_synth_r18_digits --batch-size 64 --steps 5 \\
        --markdown docs/results/synth_digits_steptime.md

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
from ssl_zoo.recipe import get_recipe
from ssl_zoo.report import command_line, machine_info, machine_line
from ssl_zoo.train import build_param_groups


def time_steps(names: list[str], batch: int, steps: int, seed: int = 0) -> dict[str, float]:
    methods = {}
    for name in names:
        torch.manual_seed(seed)
        method = create_method(name).train()
        opt = torch.optim.SGD(build_param_groups(method, 0.01, 0.0), lr=0.01, momentum=0.9)
        methods[name] = (method, opt)
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(steps + 1):  # rep 0 is warm-up
        for name, (method, opt) in methods.items():
            size = get_recipe(name).image_size
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
    args = p.parse_args(argv)
    medians = time_steps(args.recipes, args.batch_size, args.steps)
    base = medians[args.recipes[0]]
    lines = [f"Median optimiser-step time at batch {args.batch_size} ({args.steps} timed steps after 1 warm-up, "
             f"recipes interleaved):", "", f"| recipe | median step (s) | images/s | vs `{args.recipes[0]}` |",
             "|---|---|---|---|"]
    lines += [f"| `{n}` | {t:.3f} | {args.batch_size / t:.1f} | {t / base:.2f}x |" for n, t in medians.items()]
    lines += ["", machine_line(), "", "Command:", "", f"```\n{command_line('python benchmarks/step_time.py', argv)}\n```", ""]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
        args.markdown.with_suffix(".json").write_text(json.dumps(
            {"batch_size": args.batch_size, "steps": args.steps, "median_s": medians, "machine": machine_info()},
            indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
