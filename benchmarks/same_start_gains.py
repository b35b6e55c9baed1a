"""Each trained row of a `compare.py` JSON against its own recipe's untrained encoder of the same seed.

    python benchmarks/same_start_gains.py TRAINED.json UNTRAINED.json --markdown OUT.md [--title TEXT]

TRAINED.json holds trained rows (`compare.py` without `--untrained-only`; its own "random init" / untrained rows
are ignored); UNTRAINED.json holds `compare.py --untrained-only` rows of the same recipes and seeds (each
recipe's own init, BatchNorm statistics recomputed on the training images, and with the initial statistics).
Both must come from the same evaluation protocol (view, k-NN, probe): the script only subtracts. A trained row
whose recipe and seed have no untrained row is left out, and said so.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

METRICS = (("knn20_top1", "k-NN@20"), ("knn200_top1", "k-NN@200"), ("linear_top1", "linear"))


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def row_kind(row: dict) -> str:
    """``trained``, ``untrained`` or ``baseline`` for a compare.py row. A ``random init`` row (tables before issue
    21: MoCo v2's start for every method) is the baseline, never a recipe's own start nor a trained row; rows of
    those tables have no ``encoder`` field, and the others are trained."""
    return "baseline" if row.get("method") == "random init" else (row.get("encoder") or "trained")


def gains_table(trained_rows: list[dict], untrained_rows: list[dict]) -> tuple[list[str], list[str]]:
    """Markdown lines of the table, and the (recipe, seed) pairs left out for want of an untrained row."""
    start = {(r["recipe"], r["seed"]): r for r in untrained_rows if row_kind(r) == "untrained"}
    trained = [r for r in trained_rows if row_kind(r) == "trained"]
    missing = [f"{r['recipe']} seed {r['seed']}" for r in trained if (r["recipe"], r["seed"]) not in start]
    lines = ["| recipe | seeds | " + " | ".join(f"{name}: own start / (initial BN) / trained / **gain**"
                                               for _, name in METRICS) + " |",
             "|---|---|" + "---|" * len(METRICS)]
    for recipe in dict.fromkeys(r["recipe"] for r in trained):
        rows = [r for r in trained if r["recipe"] == recipe and (recipe, r["seed"]) in start]
        if not rows:
            continue
        cells = []
        for key, _ in METRICS:
            own = [100 * start[recipe, r["seed"]][key] for r in rows]
            init = [100 * start[recipe, r["seed"]][f"{key}_init_bn"] for r in rows]
            after = [100 * r[key] for r in rows]
            cells.append(f"{_mean_std(own)} / ({_mean_std(init)}) / {_mean_std(after)} / "
                         f"**{_mean_std([a - o for a, o in zip(after, own)])}**")
        lines.append(f"| `{recipe}` | {', '.join(str(r['seed']) for r in rows)} | " + " | ".join(cells) + " |")
    return lines, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trained", help="compare.py JSON with the trained rows")
    parser.add_argument("untrained", help="compare.py --untrained-only JSON of the same recipes and seeds")
    parser.add_argument("--markdown", required=True, help="where to write the table")
    parser.add_argument("--title", default="", help="a line above the table")
    args = parser.parse_args(argv)
    trained, untrained = (json.loads(Path(p).read_text()) for p in (args.trained, args.untrained))
    lines, missing = gains_table(trained["rows"], untrained["rows"])
    legend = ("Mean ± sample std over the seeds, in %. own start: the recipe's own untrained encoder (its init, "
              "same seed), BatchNorm statistics recomputed on the training images; (initial BN): the same encoder "
              "with its initial statistics; trained: the documented run of that recipe and seed; gain: trained "
              "minus own start, per seed, then mean ± std (points).")
    text = "\n\n".join(filter(None, [args.title, legend, "\n".join(lines),
                                     f"Left out (no untrained row): {', '.join(missing)}." if missing else "",
                                     f"Trained rows: `{trained.get('command', args.trained)}`",
                                     f"Untrained rows: `{untrained.get('command', args.untrained)}`",
                                     f"Command:\n\n```\npython benchmarks/same_start_gains.py "
                                     f"{' '.join(argv if argv is not None else sys.argv[1:])}\n```"]))
    Path(args.markdown).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
