"""Training curves from a run folder's ``log.jsonl``, and ``ssl-zoo plot RUN [RUN ...]``.

    ssl-zoo plot runs/mine                      # redraws runs/mine/curves.png
    ssl-zoo plot runs/a runs/b --output ab.png  # several runs overlaid, legend by run name

Panels (each only when the log has it): the loss and its parts (``loss*`` keys of the step records, solid /
dashed), the other logged scalars of the method (e.g. MoCo's positive similarity), the learning rate, and from
the ``--knn-every`` monitor the k-NN top-1 and the collapse monitor (mean per-dimension std of the normalised
features, with its healthy level 1/sqrt(d) dotted). Training writes ``curves.png`` at its end
(``ssl_zoo.run_readme.describe_run``). matplotlib is imported only when drawing.
"""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserInputError

LOG_NAME = "log.jsonl"  # ssl_zoo.train.LOG_NAME (not imported: train imports torch)
CURVES_NAME = "curves.png"
# step-record keys that are bookkeeping, not curves of the method
_NOT_CURVES = {"step", "epoch", "lr", "images_per_s"}


@dataclass
class RunCurves:
    """A run's logged series: ``steps[key] = (x, y)`` from the step records, ``epochs[key]`` from the epoch
    records (``epoch_`` prefix dropped; k-NN and collapse live here), and the feature dimension if known."""

    name: str
    steps: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    epochs: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    num_features: int | None = None


def read_curves(run_dir: str | Path, name: str | None = None) -> RunCurves:
    """The series of ``run_dir/log.jsonl`` (an error naming the file when there is none)."""
    run = Path(run_dir)
    log = run / LOG_NAME if run.is_dir() else run
    if not log.is_file():
        raise UserInputError(f"{run_dir}: no {LOG_NAME} here; give a training run folder (`ssl-zoo train ... "
                             f"--output DIR` writes one).")
    curves = RunCurves(name or (log.parent.name or str(log.parent)))
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash; the others still draw
        if not isinstance(record, dict) or "step" not in record:
            continue
        is_epoch = any(k.startswith("epoch_") for k in record) or "knn_top1" in record
        target = curves.epochs if is_epoch else curves.steps
        for key, value in record.items():
            if key in ("step", "epoch", "images_per_s") or not isinstance(value, (int, float)):
                continue
            if is_epoch and key == "lr":
                continue  # the step records carry the lr
            if not math.isfinite(float(value)):
                continue
            key = key.removeprefix("epoch_") if is_epoch else key
            xs, ys = target.setdefault(key, ([], []))
            xs.append(float(record["step"]))
            ys.append(float(value))
    if not curves.steps and not curves.epochs:
        raise UserInputError(f"{log} has no logged step yet; train for at least --log-every steps first.")
    config = log.parent / "config.json"
    if config.is_file():
        try:
            curves.num_features = int(json.loads(config.read_text()).get("num_features") or 0) or None
        except (ValueError, OSError):
            pass
    return curves


def _panels(runs: Sequence[RunCurves]) -> list[str]:
    keys = {k for r in runs for k in r.steps} | {k for r in runs for k in r.epochs}
    panels = []
    if any(k.startswith("loss") for k in keys):
        panels.append("loss")
    if any(k not in _NOT_CURVES and not k.startswith("loss") for r in runs for k in r.steps):
        panels.append("other")
    if any("lr" in r.steps for r in runs):
        panels.append("lr")
    if "knn_top1" in keys:
        panels.append("knn")
    if "feature_std" in keys:
        panels.append("collapse")
    return panels


TITLES = {"loss": "loss (step; epoch mean: markers)", "other": "other logged values", "lr": "learning rate",
          "knn": "k-NN top-1 (%), --knn-every", "collapse": "collapse monitor: feature std"}


def draw_curves(runs: Sequence[RunCurves], output: str | Path, dpi: int = 100) -> Path:
    """One PNG with a panel per kind of series; several runs share the panels, a colour each."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    panels = _panels(runs)
    if not panels:
        raise UserInputError("the log has no curve to draw (no loss, lr or monitor values).")
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    colours = [cmap(i) for i in range(cmap.N)]
    styles = ["-", "--", ":", "-."]
    for ax, panel in zip(axes.flat, panels):
        ax.set_title(TITLES[panel], fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        for i, run in enumerate(runs):
            colour = colours[i % len(colours)]
            prefix = f"{run.name}: " if len(runs) > 1 else ""
            if panel in ("loss", "other"):
                keys = [k for k in run.steps if (k.startswith("loss") if panel == "loss" else
                                                 k not in _NOT_CURVES and not k.startswith("loss"))]
                keys.sort(key=lambda k: (k != "loss", k))
                # a part equal to the loss all along (a one-term loss) would hide under it: named in its label
                same = [k for k in keys if k != "loss" and "loss" in run.steps and run.steps[k] == run.steps["loss"]]
                keys = [k for k in keys if k not in same]
                for j, key in enumerate(keys):
                    x, y = run.steps[key]
                    label = prefix + " = ".join([key, *same] if key == "loss" else [key])
                    ax.plot(x, y, styles[j % len(styles)], color=colour, label=label, lw=1.4)
                if panel == "loss" and "loss" in run.epochs:
                    x, y = run.epochs["loss"]
                    ax.plot(x, y, "o", color=colour, ms=5, label=prefix + "epoch mean loss")
            elif panel == "lr" and "lr" in run.steps:
                ax.plot(*run.steps["lr"], color=colour, label=run.name, lw=1.4)
            elif panel == "knn" and "knn_top1" in run.epochs:
                ax.plot(*run.epochs["knn_top1"], "o-", color=colour, label=run.name, lw=1.4)
            elif panel == "collapse" and "feature_std" in run.epochs:
                ax.plot(*run.epochs["feature_std"], "o-", color=colour, label=run.name, lw=1.4)
                if run.num_features:
                    ax.axhline(1 / math.sqrt(run.num_features), color=colour, ls=":", lw=1,
                               label=f"{prefix}healthy 1/sqrt({run.num_features})")
        if panel == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if ax.has_data():
            ax.legend(fontsize=8)
    last_step = max(max(xs[-1] for xs, _ in [*r.steps.values(), *r.epochs.values()]) for r in runs)
    for ax in list(axes.flat)[:len(panels)]:  # one step axis for all panels: a single k-NN point sits in place
        ax.set_xlim(0, last_step * 1.03 + 1)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(" vs ".join(r.name for r in runs), fontsize=11)
    fig.tight_layout()
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def plot_runs(run_dirs: Sequence[str | Path], output: str | Path | None = None) -> Path:
    """``curves.png`` of one run (default: in the run folder) or the overlay of several (``output`` needed)."""
    if not run_dirs:
        raise UserInputError("give at least one run folder.")
    if output is None:
        if len(run_dirs) > 1:
            raise UserInputError("several runs: say where the overlay goes with --output FILE.png.")
        output = Path(run_dirs[0]) / CURVES_NAME
    names = [Path(r).resolve().name for r in run_dirs]
    if len(set(names)) < len(names):  # runs/a/x and runs/b/x: the parent tells them apart
        names = [f"{Path(r).resolve().parent.name}/{Path(r).resolve().name}" for r in run_dirs]
    return draw_curves([read_curves(r, n) for r, n in zip(run_dirs, names)], output)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="training run folder(s) holding log.jsonl")
    parser.add_argument("--output", default=None, metavar="PNG",
                        help="where to write (default: RUN/curves.png; required for several runs)")


def run_cli(args: argparse.Namespace) -> int:
    out = plot_runs(args.runs, args.output)
    print(f"wrote {out}")
    return 0


def describe(curves: RunCurves) -> dict[str, Any]:
    """The last value of each series (the run README's numbers)."""
    last = {k: ys[-1] for k, (_, ys) in curves.steps.items() if ys}
    last.update({f"epoch_{k}" if k in curves.steps else k: ys[-1] for k, (_, ys) in curves.epochs.items() if ys})
    return last
