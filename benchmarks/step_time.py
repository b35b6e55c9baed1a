"""Optimiser-step time of several recipes at the same batch, interleaved so machine load hits them alike.

    python benchmarks/step_time.py moco_v2_r18_digits moco_v2_synth_r18_digits --batch-size 64 --steps 5 \\
        --markdown docs/results/synth_digits_steptime.md
    python benchmarks/step_time.py moco_v2_r18_digits leoclr_r18_digits --compare-bn-groups --image-size 64 \\
        --markdown docs/results/bn_groups_64px.md

``--reference`` (MoCo v2 / LeOCLR recipes) also times a plain-torch step written here from MoCo's
Algorithm 1 (the same timm backbone and head, one BatchNorm group, shuffled keys, torch's default SGD)
against ssl_zoo's step at one BatchNorm group, in the default and in the channels_last memory format,
and prints reference time / ssl_zoo time (> 1: ssl_zoo is faster).

``--compare-bn-groups`` times each recipe twice: with its BatchNorm groups (``bn_group_size``, split
inside one pass by ``SplitBatchNorm2d``) and with one group per batch (``bn_group_size=None``).
``--set KEY=VALUE`` and ``--image-size`` override every recipe.

One step = forward (the method's whole loss) + backward + SGD step + ``after_optimizer_step``, on
random views at the recipe's image size. Reports the median over ``--steps`` timed steps after one
warm-up step, and each recipe's ratio to the first one.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from ssl_zoo.factory import create_method
from ssl_zoo.optim import build_param_groups
from ssl_zoo.recipe import Recipe, get_recipe
from ssl_zoo.report import command_line, footer_lines, machine_info, machine_line, write_report
from ssl_zoo.train import parse_overrides


class PlainMomentumContrast:
    """The reference: MoCo's Algorithm 1 in plain torch ops (LeOCLR: the original as query, both crops as keys)."""

    def __init__(self, recipe: Recipe) -> None:
        import copy

        torch.manual_seed(0)
        ours = create_method(recipe.with_overrides(bn_group_size=None))
        self.view_names = ours.view_names
        self.f_q = torch.nn.Sequential(copy.deepcopy(ours.encoder), copy.deepcopy(ours.projector)).train()
        self.f_k = copy.deepcopy(self.f_q)
        for p in self.f_k.parameters():
            p.requires_grad_(False)
        self.queue = ours.queue.clone()
        self.ptr = 0
        self.m, self.t = ours.momentum, ours.temperature
        self.opt = torch.optim.SGD(self.f_q.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def _key(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # shuffle-BN in one process: permute, encode, un-permute
            idx = torch.randperm(x.shape[0])
            return torch.nn.functional.normalize(self.f_k(x[idx]), dim=1)[torch.argsort(idx)]

    def _info_nce(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ self.queue.t()], dim=1) / self.t
        return torch.nn.functional.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))

    def step(self, views: list[torch.Tensor]) -> float:
        q = torch.nn.functional.normalize(self.f_q(views[0]), dim=1)
        keys = [self._key(v) for v in views[1:]]
        loss = sum(self._info_nce(q, k) for k in keys)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            for p_k, p_q in zip(self.f_k.parameters(), self.f_q.parameters()):
                p_k.mul_(self.m).add_(p_q, alpha=1 - self.m)
            for k in keys:
                idx = (torch.arange(k.shape[0]) + self.ptr) % self.queue.shape[0]
                self.queue[idx] = k
                self.ptr = int((self.ptr + k.shape[0]) % self.queue.shape[0])
        return float(loss.detach())  # the one host sync a training loop makes to log


def time_reference(recipes: dict[str, Recipe], batch: int, steps: int, compile: bool = False) -> dict[str, float]:
    """reference vs ssl_zoo (one BN group; contiguous and channels_last, and with ``compile`` also
    ``nn.Module.compile()``, as ``ssl-zoo train --compile`` does), interleaved; median seconds."""
    from ssl_zoo.optim import build_optimizer
    from ssl_zoo.train import _scalars

    runners = {}
    for name, recipe in recipes.items():
        plain = PlainMomentumContrast(recipe)
        size = recipe.image_size
        runners[f"{name}: plain reference"] = (lambda views, plain=plain: plain.step(views), plain.view_names,
                                               size, torch.contiguous_format)
        variants = [("", torch.contiguous_format, False), (", channels_last", torch.channels_last, False)]
        if compile:
            variants += [(", torch.compile", torch.contiguous_format, True),
                         (", channels_last + torch.compile", torch.channels_last, True)]
        for fmt_name, fmt, compiled in variants:
            torch.manual_seed(0)
            method = create_method(recipe.with_overrides(bn_group_size=None)).train().to(memory_format=fmt)
            if compiled:
                method.compile()  # compiled on the warm-up step, which is not timed
            opt = build_optimizer(build_param_groups(method, 0.01, 1e-4), recipe)

            def ours(views, method=method, opt=opt):
                out = method(views)
                parts = _scalars(out)
                out["loss"].backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                method.after_optimizer_step(0.5)
                return parts["loss"]

            runners[f"{name}: ssl_zoo{fmt_name}"] = (ours, method.view_names, size, fmt)
    times: dict[str, list[float]] = {n: [] for n in runners}
    for rep in range(steps + 1):
        for label, (run, view_names, size, fmt) in runners.items():
            views = [torch.randn(batch, 3, size, size).to(memory_format=fmt) for _ in view_names]
            start = time.perf_counter()
            run(views)
            if rep:
                times[label].append(time.perf_counter() - start)
    return {n: statistics.median(t) for n, t in times.items()}


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
    p.add_argument("--reference", action="store_true",
                   help="time a plain-torch MoCo v2 / LeOCLR step against ssl_zoo's (one BatchNorm group)")
    p.add_argument("--compile", action="store_true",
                   help="with --reference: also time ssl_zoo's step with torch.compile (inductor)")
    p.add_argument("--profile", type=Path, default=None, metavar="FILE",
                   help="write a torch.profiler table (top ops by CPU time) of the first recipe's step to FILE")
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
    if args.profile:
        return write_profile(next(iter(recipes.items())), args, argv)
    if args.reference:
        return report_reference(recipes, args, argv)
    medians = time_steps(recipes, args.batch_size, args.steps)
    first = next(iter(medians))
    base = medians[first]
    size = next(iter(recipes.values())).image_size
    lines = [f"Median optimiser-step time at batch {args.batch_size}, {size} px ({args.steps} timed steps after "
             f"1 warm-up, recipes interleaved):", "", f"| recipe | median step (s) | images/s | vs `{first}` |",
             "|---|---|---|---|"]
    lines += [f"| `{n}` | {t:.3f} | {args.batch_size / t:.1f} | {t / base:.2f}x |" for n, t in medians.items()]
    lines += footer_lines("python benchmarks/step_time.py", argv)
    write_report("\n".join(lines), {"batch_size": args.batch_size, "image_size": size, "steps": args.steps,
                                    "median_s": medians, "machine": machine_info()},
                 markdown=args.markdown, json_path=args.markdown.with_suffix(".json") if args.markdown else None)
    return 0


def write_profile(named: tuple[str, Recipe], args: argparse.Namespace, argv: list[str] | None) -> int:
    """torch.profiler over ``--steps`` optimiser steps of one recipe: where a CPU step spends its time."""
    from torch.profiler import ProfilerActivity, profile

    name, recipe = named
    torch.manual_seed(0)
    method = create_method(recipe).train()
    opt = torch.optim.SGD(build_param_groups(method, 0.01, 1e-4), lr=0.01, momentum=0.9, foreach=True)
    views = [torch.randn(args.batch_size, 3, recipe.image_size, recipe.image_size) for _ in method.view_names]

    def step() -> None:
        method(views)["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        method.after_optimizer_step(0.5)

    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    text = (f"torch.profiler, `{name}`, batch {args.batch_size}, {recipe.image_size} px, {args.steps} steps "
            f"(top ops by self CPU time):\n\n```\n{table}\n```\n\n{machine_line()}\n\nCommand:\n\n"
            f"```\n{command_line('python benchmarks/step_time.py', argv)}\n```\n")
    args.profile.write_text(text)
    print(text)
    return 0


def report_reference(recipes: dict[str, Recipe], args: argparse.Namespace, argv: list[str] | None) -> int:
    medians = time_reference(recipes, args.batch_size, args.steps, compile=args.compile)
    size = next(iter(recipes.values())).image_size
    lines = [f"Optimiser step vs a plain-torch reference step, batch {args.batch_size}, {size} px, one BatchNorm "
             f"group ({args.steps} timed steps after 1 warm-up, interleaved; median):", "",
             "| step | median (s) | images/s | reference / this |", "|---|---|---|---|"]
    ratios = {}
    for label, t in medians.items():
        ref = medians[label.split(":")[0] + ": plain reference"]
        ratios[label] = ref / t
        lines.append(f"| {label} | {t:.3f} | {args.batch_size / t:.1f} | {ref / t:.2f}x |")
    lines += footer_lines("python benchmarks/step_time.py", argv)
    write_report("\n".join(lines), {"batch_size": args.batch_size, "image_size": size, "steps": args.steps,
                                    "median_s": medians, "reference_over_ours": ratios, "machine": machine_info()},
                 markdown=args.markdown, json_path=args.markdown.with_suffix(".json") if args.markdown else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
