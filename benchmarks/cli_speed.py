"""Wall time of `ssl-zoo --help`, `ssl-zoo list` and every `ssl-zoo SUBCOMMAND --help`, each a fresh process.

    python benchmarks/cli_speed.py --json docs/results/cli_speed.json --markdown docs/results/cli_speed.md

Each command runs as ``python -m ssl_zoo.cli ...`` with this checkout first on ``PYTHONPATH`` (what the
installed ``ssl-zoo`` script does: ``from ssl_zoo.cli import main``); ``--ssl-zoo PATH`` times an
installed script instead. One untimed run first (warm file cache), then ``--repeats`` timed runs,
commands interleaved. For scale, two floors are timed the same way: the bare interpreter
(``python -c pass``) and ``python -c "import torch, timm"``, what every command paid before the
imports were made lazy. The subcommands are the rows of ``ssl_zoo.cli.COMMANDS`` (a subcommand added there
is timed too) and ``eval PROTOCOL --help`` for each evaluation protocol; each row says whether its median is
under ``--limit`` seconds (1 s: the goal for every help screen).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` failed with exit code {done.returncode}: "
                         f"{done.stderr.strip().splitlines()[-1:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=7, help="timed runs per command after one untimed run")
    p.add_argument("--ssl-zoo", default=None, help="time this installed ssl-zoo script instead of "
                   "`python -m ssl_zoo.cli` from this checkout")
    p.add_argument("--no-floors", action="store_true", help="skip the `python -c pass` / `import torch, timm` rows")
    p.add_argument("--limit", type=float, default=1.0, help="seconds a help screen may take (default 1)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--markdown", type=Path, default=None, help="write a table with the machine and command")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    prog = [args.ssl_zoo] if args.ssl_zoo else [sys.executable, "-m", "ssl_zoo.cli"]
    shown = "ssl-zoo" if args.ssl_zoo else "python -m ssl_zoo.cli"
    cases = {f"{shown} --help": prog + ["--help"], f"{shown} list": prog + ["list"]}
    for command in subcommands():
        cases[f"{shown} {' '.join(command)} --help"] = prog + [*command, "--help"]
    if not args.no_floors:
        cases["python -c pass"] = [sys.executable, "-c", "pass"]
        cases['python -c "import torch, timm"'] = [sys.executable, "-c", "import torch, timm"]
    times: dict[str, list[float]] = {name: [] for name in cases}
    load_before = os.getloadavg()[0]  # the machine may be shared: the 1-minute load says how busy it was
    for rep in range(args.repeats + 1):  # rep 0: untimed, warms the file cache
        for name, cmd in cases.items():
            t = run_once(cmd, env)
            if rep:
                times[name].append(t)
    rows = [{"command": name, "median_s": round(statistics.median(ts), 3), "min_s": round(min(ts), 3),
             "max_s": round(max(ts), 3), "under_limit": statistics.median(ts) < args.limit}
            for name, ts in times.items()]

    # after timing: torch is not loaded while we measure
    from ssl_zoo.report import command_line, machine_info, write_report

    info = {"machine": machine_info(), "repeats": args.repeats, "limit_s": args.limit, "results": rows,
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "command": command_line("python benchmarks/cli_speed.py", argv)}
    write_report(markdown(info), info, markdown=args.markdown, json_path=args.json)
    return 0


def subcommands() -> list[list[str]]:
    """Every subcommand of the table and every evaluation protocol (imports no torch: cli and parsers are light)."""
    sys.path.insert(0, str(ROOT))
    from ssl_zoo.cli import COMMANDS
    from ssl_zoo.parsers.eval import PROTOCOLS

    return [[name] for name in COMMANDS] + [["eval", protocol] for protocol in PROTOCOLS]


def markdown(info: dict) -> str:
    from ssl_zoo.report import machine_line

    limit = info["limit_s"]
    lines = [f"Wall time of a fresh process, median of {info['repeats']} runs after one untimed run "
             f"(last column: median under {limit:g} s; the two `python -c` rows are floors, not commands):", "",
             f"| command | median (s) | min (s) | max (s) | < {limit:g} s |", "|---|---|---|---|---|"]
    lines += [f"| `{r['command']}` | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} | "
              f"{'' if r['command'].startswith('python -c') else ('yes' if r['under_limit'] else '**no**')} |"
              for r in info["results"]]
    load = info.get("load_average_1min")
    lines += ["", machine_line(info["machine"]) + (f" 1-minute load average {load[0]:g} before, {load[1]:g} after "
                                                   f"the runs." if load else ""),
              "", "Command:", "", f"```\n{info['command']}\n```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
