"""Train several recipes with the same budget and compare their frozen encoders.

    python benchmarks/compare.py moco_v2_r18_digits simsiam_r18_digits leoclr_r18_digits \
        --seed 0 --markdown docs/results/methods_digits.md

Every recipe is trained with ``ssl_zoo.train.train`` under the same overrides (``--epochs``,
``--batch-size``, ``--seed``; default: each recipe's own values), then its exported encoder is
evaluated on the recipe's dataset with ``ssl_zoo.evaluation``: weighted k-NN (k = 20 and 200,
cosine, exp(s / 0.07) votes) and ``ssl_zoo.evaluation.linear.linear_probe_on_features``
(the MoCo linear-probe schedule on cached frozen features of the train split; last-epoch top-1
on the test split). Images use the recipe's ``"eval"`` view (Resize(size / 0.875) + CenterCrop).
Writes JSON (``--json``, default: the Markdown path with ``.json``) and a Markdown table.
``--reuse`` skips training for runs whose folder already holds a finished export.
``--seeds 1 2 3`` repeats everything per seed (runs in ``RUNS/RECIPE/seedS``) and adds a table of the mean and
the sample standard deviation over the seeds per method, above the per-seed rows.

Each recipe is compared with its OWN untrained encoder (``ssl_zoo.evaluation.baseline``): the weights its
training run starts from (the recipe's init, e.g. SimSiam's ``zero_init_last=True``, and the same seed), with
BatchNorm running statistics recomputed on the training split under the ``"eval"`` view (no gradient, no
weight change), and beside it the same encoder with its initial statistics ("init BN"). The trained row's
"gain" columns are trained minus that untrained row (same recipe, same seed; BatchNorm recomputed), in points.
``--no-untrained`` skips the untrained rows (and so the gains); ``--untrained-only`` writes only them (no training).
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import ssl_zoo
from ssl_zoo.evaluation import knn_accuracy, recipe_split_features
from ssl_zoo.evaluation.baseline import INIT_BN_SUFFIX, untrained_scores
from ssl_zoo.evaluation.linear import linear_probe_on_features
from ssl_zoo.recipe import get_recipe
from ssl_zoo.report import machine_info, machine_line

TRAIN_SUMMARY = "compare_train.json"


def train_run(name: str, run_dir: Path, *, epochs: int | None, batch_size: int | None, seed: int,
              reuse: bool) -> dict[str, Any]:
    """Train one recipe into ``run_dir`` (or reuse a finished run); returns timing and run facts."""
    summary_path = run_dir / TRAIN_SUMMARY
    if reuse and summary_path.is_file() and (run_dir / "model.safetensors").is_file():
        summary = json.loads(summary_path.read_text())
        wanted = {"epochs": epochs, "batch_size": batch_size, "seed": seed}
        mismatch = {k: (summary["request"].get(k), v) for k, v in wanted.items() if summary["request"].get(k) != v}
        if mismatch:
            raise ValueError(f"--reuse: {run_dir} was trained with other settings {mismatch} (stored, asked). "
                             f"Drop --reuse or use another --runs folder.")
        return summary
    from ssl_zoo.train import train

    start = time.perf_counter()
    # Without --reuse the comparison retrains from scratch into its own runs folder.
    result = train(name, epochs=epochs, batch_size=batch_size, seed=seed, output=run_dir, progress_bar=False,
                   overwrite=True)
    wall = time.perf_counter() - start
    if result.get("interrupted"):
        raise RuntimeError(f"Training {name} was interrupted; resume it with `ssl-zoo train {name} --resume "
                           f"--output {run_dir}` and rerun with --reuse.")
    images = result["step"] * result["global_batch"]
    summary = {"recipe": name, "request": {"epochs": epochs, "batch_size": batch_size, "seed": seed},
               "epochs": result["epoch"], "steps": result["step"], "global_batch": result["global_batch"],
               "lr": result["lr"], "final": result["final"], "train_wall_s": wall, "train_images": images,
               # the whole train() call: data and model set-up, the loop, checkpoints and export
               "images_per_s": images / wall}
    summary_path.write_text(json.dumps(summary, indent=2))
    return summary


def evaluate_encoder(encoder: torch.nn.Module, recipe_name: str, seed: int, data: str | None) -> dict[str, float]:
    # The k-NN bank and probe training set are the labelled train split, whatever split pre-training read.
    train_x, train_y, test_x, test_y = recipe_split_features(encoder, get_recipe(recipe_name), data)
    return {"knn20_top1": knn_accuracy(train_x, train_y, test_x, test_y, k=20),
            "knn200_top1": knn_accuracy(train_x, train_y, test_x, test_y, k=200),
            # MoCo-protocol probe (SGD lr 30, 100 epochs, steps at 60/80) on cached frozen features.
            "linear_top1": linear_probe_on_features(train_x, train_y, test_x, test_y, seed=seed)["top1"],
            "n_train": len(train_y), "n_test": len(test_y)}


METRICS = (("knn20_top1", "k-NN k=20 top-1"), ("knn200_top1", "k-NN k=200 top-1"), ("linear_top1", "linear top-1"))
GAIN_PREFIX = "gain_"  # row[GAIN_PREFIX + metric]: trained minus the same recipe's untrained row, same seed
UNTRAINED, TRAINED = "untrained", "trained"
LEGEND = ("untrained: the recipe's own initial weights (its init, same seed), BatchNorm statistics recomputed on "
          "the training split under the eval view; in brackets, with the initial BatchNorm statistics (init BN). "
          "gain: trained minus the untrained row of the same recipe and seed, in points.")


def untrained_row(name: str, seed: int, data: str | None, epochs: int | None,
                  batch_size: int | None) -> dict[str, Any]:
    """The recipe's own untrained encoder (ssl_zoo.evaluation.baseline), scored as ``evaluate_encoder`` does."""
    from ssl_zoo.train import resolve_recipe

    recipe = resolve_recipe(name, epochs=epochs, batch_size=batch_size)
    scores = untrained_scores(recipe, seed, lambda encoder: evaluate_encoder(encoder, name, seed, data), data=data)
    row = {"method": recipe.method, "recipe": name, "seed": seed, "encoder": UNTRAINED, "epochs": 0,
           "train_wall_s": None, "images_per_s": None}
    row.update({k: v for k, v in scores.items() if not k.endswith(INIT_BN_SUFFIX)})
    row.update({k + INIT_BN_SUFFIX: scores[k + INIT_BN_SUFFIX] for k, _ in METRICS})
    return row


def add_gains(row: dict[str, Any], untrained: dict[str, Any] | None) -> dict[str, Any]:
    """``gain_<metric>`` = trained minus untrained (fractions), when the untrained row was measured."""
    if untrained is not None:
        row.update({GAIN_PREFIX + k: row[k] - untrained[k] for k, _ in METRICS})
    return row


def _mean_std(values: list[float]) -> dict[str, float | None]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None}


def seed_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, recipe, encoder): the seeds, and the mean and sample std of each metric (in %); of the
    init-BN numbers for untrained rows and of the gains (points) for trained rows that have them."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["recipe"], r.get("encoder", TRAINED)), []).append(r)
    out = []
    for (method, recipe, encoder), group in groups.items():
        entry: dict[str, Any] = {"method": method, "recipe": recipe, "encoder": encoder,
                                 "seeds": [r.get("seed") for r in group]}
        for key, _ in METRICS:
            entry[key] = _mean_std([100 * r[key] for r in group])
            for extra in (key + INIT_BN_SUFFIX, GAIN_PREFIX + key):
                if all(extra in r for r in group):
                    entry[extra] = _mean_std([100 * r[extra] for r in group])
        out.append(entry)
    return out


def _spread(stat: dict[str, Any], sign: str = "") -> str:
    return f"{stat['mean']:{sign}.2f} ± {stat['std']:.2f}" if stat["std"] is not None else f"{stat['mean']:{sign}.2f}"


def summary_table(summary: list[dict[str, Any]]) -> list[str]:
    lines = ["| method | recipe | encoder | seeds | " + " | ".join(f"{title} (mean ± std)" for _, title in METRICS)
             + " | " + " | ".join(f"gain {title}" for _, title in METRICS) + " |",
             "|---|---|---|---|" + "---|" * 2 * len(METRICS)]
    for e in summary:
        cells = []
        for k, _ in METRICS:
            init = e.get(k + INIT_BN_SUFFIX)
            cells.append(_spread(e[k]) + (f" (init BN {_spread(init)})" if init else ""))
        cells += [_spread(e[GAIN_PREFIX + k], "+") if GAIN_PREFIX + k in e else "-" for k, _ in METRICS]
        lines.append(f"| {e['method']} | `{e['recipe']}` | {e.get('encoder', TRAINED)} | {len(e['seeds'])} | "
                     + " | ".join(cells) + " |")
    return lines


def markdown_table(rows: list[dict[str, Any]], machine: dict[str, Any], command: str) -> str:
    seeds = sorted({r["seed"] for r in rows if r.get("seed") is not None})
    lines: list[str] = []
    if any(r.get("encoder") == UNTRAINED for r in rows):
        lines += [LEGEND, ""]
    if len(seeds) > 1:
        lines += [f"Mean ± sample standard deviation over seeds {', '.join(map(str, seeds))} (%):", "",
                  *summary_table(seed_summary(rows)), "", "Per seed:", ""]
    lines += ["| method | recipe | encoder | seed | epochs | k-NN k=20 top-1 | k-NN k=200 top-1 | linear top-1 | "
              "gain k-NN k=20 | gain k-NN k=200 | gain linear | train wall time | images/s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        wall = f"{r['train_wall_s'] / 60:.1f} min" if r.get("train_wall_s") is not None else "-"
        ips = f"{r['images_per_s']:.1f}" if r.get("images_per_s") is not None else "-"
        cells = []
        for k, _ in METRICS:
            init = r.get(k + INIT_BN_SUFFIX)
            cells.append(f"{100 * r[k]:.2f}%" + (f" (init BN {100 * init:.2f}%)" if init is not None else ""))
        cells += [f"{100 * r[GAIN_PREFIX + k]:+.2f}" if GAIN_PREFIX + k in r else "-" for k, _ in METRICS]
        lines.append(f"| {r['method']} | `{r['recipe']}` | {r.get('encoder', TRAINED)} | {r.get('seed', '-')} | "
                     f"{r['epochs']} | " + " | ".join(cells) + f" | {wall} | {ips} |")
    lines += ["", machine_line(machine), "",
              "Command:", "", "```", command, "```", ""]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipes", nargs="+", help="recipe names (ssl-zoo list)")
    p.add_argument("--epochs", type=int, default=None, help="same epochs for every recipe (default: recipe's)")
    p.add_argument("--batch-size", type=int, default=None, help="same batch for every recipe (default: recipe's)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0)
    seeds.add_argument("--seeds", type=int, nargs="+", default=None,
                       help="several seeds: every row per seed, plus mean and std over them")
    p.add_argument("--data", default=None, help="dataset root (not needed for the embedded digits)")
    p.add_argument("--runs", default="runs/compare", help="folder for the training runs (one sub-folder each)")
    p.add_argument("--markdown", required=True, help="where to write the Markdown table")
    p.add_argument("--json", default=None, help="where to write the JSON (default: --markdown with .json)")
    p.add_argument("--reuse", action="store_true", help="reuse finished runs in --runs instead of retraining")
    untrained = p.add_mutually_exclusive_group()
    untrained.add_argument("--no-untrained", action="store_true",
                           help="skip each recipe's own untrained encoder (its rows and the gains over it)")
    untrained.add_argument("--untrained-only", action="store_true",
                           help="only the untrained rows: no training (minutes instead of hours)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for name in args.recipes:
        get_recipe(name)  # unknown names fail before any training starts
    runs = Path(args.runs)
    seeds = args.seeds or [args.seed]
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for name in args.recipes:
            untrained = None
            if not args.no_untrained:
                untrained = untrained_row(name, seed, args.data, args.epochs, args.batch_size)
                rows.append(untrained)
                print(f"{name} seed {seed} untrained: k-NN@20 {100 * untrained['knn20_top1']:.2f}% (init BN "
                      f"{100 * untrained['knn20_top1' + INIT_BN_SUFFIX]:.2f}%)", flush=True)
            if args.untrained_only:
                write_reports(args, argv, rows, complete=seed == seeds[-1] and name == args.recipes[-1])
                continue
            run_dir = runs / name / f"seed{seed}" if args.seeds else runs / name
            summary = train_run(name, run_dir, epochs=args.epochs, batch_size=args.batch_size, seed=seed,
                                reuse=args.reuse)
            encoder = ssl_zoo.create_model(name, checkpoint=run_dir)
            row = {"method": get_recipe(name).method, "recipe": name, "seed": seed, "encoder": TRAINED, **summary}
            row.update(evaluate_encoder(encoder, name, seed, args.data))
            rows.append(add_gains(row, untrained))
            print(f"{name} seed {seed}: k-NN@20 {100 * row['knn20_top1']:.2f}%  k-NN@200 "
                  f"{100 * row['knn200_top1']:.2f}%  linear {100 * row['linear_top1']:.2f}%  "
                  f"train {row['train_wall_s'] / 60:.1f} min", flush=True)
            write_reports(args, argv, rows, complete=seed == seeds[-1] and name == args.recipes[-1])
    return 0


def write_reports(args: argparse.Namespace, argv: Sequence[str] | None, rows: list[dict[str, Any]],
                  complete: bool) -> None:
    """Write JSON + Markdown after every recipe, so a long comparison leaves partial results behind."""
    machine = machine_info()
    command = "python benchmarks/compare.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                                   else sys.argv[1:]))
    md_path = Path(args.markdown)
    json_path = Path(args.json) if args.json else md_path.with_suffix(".json")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"command": command, "machine": machine, "complete": complete, "rows": rows,
                                     "summary": seed_summary(rows)}, indent=2))
    text = markdown_table(rows, machine, command)
    if not complete:
        text = "**Partial: the comparison is still running or was stopped.**\n\n" + text
    md_path.write_text(text)
    print(f"Wrote {md_path} and {json_path}.", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
