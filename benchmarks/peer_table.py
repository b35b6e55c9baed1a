"""The peer-check table: a ``peer_check.py`` result beside ssl_zoo's trained run and the recipe's own start.

    python benchmarks/peer_table.py --entry PEER.json COMPARE.json [UNTRAINED.json] [--label TEXT] \\
        [--entry ...] --markdown OUT.md

For each ``--entry``, "ssl_zoo" is the trained row of the peer's recipe and seed in COMPARE.json (written by
``benchmarks/compare.py``) and "own untrained start" that recipe's untrained row: in COMPARE.json itself
(``compare.py`` measures it since issue 21) or, for an older comparison, in UNTRAINED.json
(``compare.py --untrained-only``). ``--label`` (words, one per entry, in order) says what the entry's numbers
share, e.g. the evaluation view they were measured under. Every number comes from the JSON files; none is typed.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from same_start_gains import METRICS, row_kind  # noqa: E402  (a sibling script: benchmarks/ is on sys.path)

from ssl_zoo.report import command_line, write_report  # noqa: E402


def _load(path: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"peer_table: cannot read {path}: {e}") from None


def find_row(rows: list[dict[str, Any]], recipe: str, seed: int, encoder: str, source: str) -> dict[str, Any]:
    """The row of ``recipe`` and ``seed`` whose kind (``same_start_gains.row_kind``) is ``encoder``."""
    for row in rows:
        if row.get("recipe") == recipe and row.get("seed") == seed and row_kind(row) == encoder:
            return row
    raise SystemExit(f"peer_table: {source} has no {encoder} row for {recipe} seed {seed}.")


def entry_table(peer_path: str, compare_path: str, untrained_path: str | None, label: str | None) -> list[str]:
    peer = _load(peer_path)
    recipe, seed = peer["recipe"], peer["seed"]
    compare = _load(compare_path)
    ours = find_row(compare["rows"], recipe, seed, "trained", compare_path)
    start_source = untrained_path or compare_path
    start = find_row(_load(start_source)["rows"], recipe, seed, "untrained", start_source)
    run = peer["run"]

    def cells(row: dict[str, Any]) -> str:
        return " | ".join(f"{100 * row[key]:.2f}" if row.get(key) is not None else "-" for key, _ in METRICS)

    lines = [f"**{peer['method']}** (`{recipe}`), seed {seed}"
             + (f": {label}" if label else "") + ". Same data, views, hyperparameters, initial weights "
             f"(same_start_as_ssl_zoo: {run.get('same_start_as_ssl_zoo')}) and evaluation; top-1 in %:", "",
             "| implementation | " + " | ".join(name for _, name in METRICS) + " |",
             "|---|" + "---|" * len(METRICS),
             f"| ssl_zoo (`ssl_zoo/methods/{peer['method']}.py`; `{Path(compare_path).name}`) | {cells(ours)} |",
             f"| {peer['peer_library']} {peer['peer_version']} building blocks (`benchmarks/peer_check.py`; "
             f"`{Path(peer_path).name}`) | {cells(peer['peer'])} |",
             f"| own untrained start, BatchNorm statistics recomputed (`{Path(start_source).name}`) | "
             f"{cells(start)} |", "",
             f"Peer run: {run['steps']} steps ({run['epochs']:g} epochs of global batch {run['global_batch']}) in "
             f"{run['train_wall_s'] / 60:.0f} min, {peer['machine'].get('torch_threads', '?')} torch thread(s). "
             "Command:", "", f"```\n{peer['command']}\n```", ""]
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entry", nargs="+", action="append", required=True, metavar="JSON",
                   help="PEER.json COMPARE.json [UNTRAINED.json]")
    p.add_argument("--label", action="append", default=[], help="one per --entry, in order (words only)")
    p.add_argument("--markdown", required=True)
    args = p.parse_args(argv)
    for entry in args.entry:
        if len(entry) not in (2, 3):
            p.error(f"--entry takes PEER.json COMPARE.json [UNTRAINED.json], got {len(entry)} file(s).")
    if args.label and len(args.label) != len(args.entry):
        p.error(f"give one --label per --entry ({len(args.entry)}), got {len(args.label)}.")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    labels = args.label or [None] * len(args.entry)
    lines: list[str] = []
    for entry, label in zip(args.entry, labels):
        lines += entry_table(entry[0], entry[1], entry[2] if len(entry) == 3 else None, label)
    command = command_line("python benchmarks/peer_table.py", argv)
    lines += ["Table command:", "", f"```\n{command}\n```", ""]
    write_report("\n".join(lines), {}, markdown=args.markdown, json_path=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
