"""``ssl-zoo``: one command, one subcommand per job. Each subcommand lives in its own module
(imported only when used) and provides ``configure_parser(parser)`` and ``run_cli(args) -> int``.

``SUBCOMMAND --help`` imports only the parser builder's module, so that module must not import torch, timm
or the like at its top (tests/test_cli_imports.py checks every row): where the runner's module is heavy, the
builder lives in a light module of ``ssl_zoo.parsers`` and the row names it as ``"module:function"``."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

# subcommand -> (module, parser-builder, runner, one-line help); a builder or runner written "other.module:name"
# is looked up in that module instead of the row's.
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "list": ("ssl_zoo.cli", "configure_list_parser", "run_list",
             "list recipes (method, backbone, dataset, license, weights)"),
    "train": ("ssl_zoo.train", "ssl_zoo.parsers.train:configure_parser", "run_cli",
              "train a recipe (also: accelerate launch -m ssl_zoo.train)"),
    "demo": ("ssl_zoo.demo", "configure_parser", "run_cli",
             "train the MoCo v2 demo on the embedded digits and show k-NN before/after"),
    "datasets": ("ssl_zoo.data", "ssl_zoo.parsers.datasets:configure_parser", "run_cli",
                 "list dataset names and the folder layout each expects"),
    "eval": ("ssl_zoo.evaluation", "ssl_zoo.parsers.eval:configure_parser", "run_cli",
             "evaluate an encoder: linear probe, retrieval, k-NN, fine-tuning, transfer, random-crop robustness"),
    "pretrain-decoder": ("ssl_zoo.decoder_pretrain", "ssl_zoo.parsers.decoder_pretrain:configure_parser", "run_cli",
                         "pre-train the synth decoder with the encoder frozen"),
    "visualize": ("ssl_zoo.visualize", "ssl_zoo.parsers.visualize:configure_parser", "run_cli",
                  "reconstruction and Grad-CAM picture grids"),
    "reproduce": ("ssl_zoo.reproduce", "configure_parser", "run_cli",
                  "run a recipe's paper pipeline: pre-training, its evaluation protocols, results vs paper, card, "
                  "push"),
    "push": ("ssl_zoo.hub", "ssl_zoo.parsers.push:configure_parser", "run_push",
             "publish a run or model folder to the Hugging Face Hub"),
    "convert": ("ssl_zoo.convert", "ssl_zoo.parsers.convert:configure_parser", "run_cli",
                "import an upstream checkpoint (MoCo, SimSiam, lightly, solo-learn, timm)"),
    "embed": ("ssl_zoo.embedding", "configure_parser", "run_cli",
              "write one embedding per image of a folder (.safetensors / .npy) and a table of paths and labels"),
    "plot": ("ssl_zoo.plots", "configure_parser", "run_cli",
             "draw a run's training curves (loss, lr, k-NN, collapse) or overlay several runs"),
    "neighbors": ("ssl_zoo.pictures", "configure_neighbors_parser", "run_neighbors",
                  "a picture of query images and their nearest neighbours in a folder"),
    "map": ("ssl_zoo.pictures", "configure_map_parser", "run_map",
            "a 2-D map (PCA, t-SNE, UMAP) of a folder's embeddings, by class or with thumbnails"),
}


class _Parser(argparse.ArgumentParser):
    """argparse's errors become a ``UsageError``: ``main`` prints them as the one ``error:`` line every user error
    gets, instead of argparse's usage block plus a line and ``SystemExit(2)``."""

    def error(self, message: str) -> NoReturn:
        from .errors import UsageError

        raise UsageError(f"{self.prog}: {message} (`{self.prog} --help` shows the usage).")


def configure_list_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("filter", nargs="?", default="*",
                        help="fnmatch pattern ('moco*') or a word to search for ('digits')")
    parser.add_argument("--pretrained", action="store_true",
                        help="only recipes with weights to download (Hub repo, official URL or file)")


def run_list(args: argparse.Namespace) -> int:
    from .recipe import get_recipe, list_models

    # a bare word is a substring search: `ssl-zoo list digits`
    pattern = args.filter if any(c in args.filter for c in "*?[") else f"*{args.filter}*"
    names = list_models(pattern, pretrained=args.pretrained)
    if not names:
        from .errors import UserInputError
        from .registry import did_you_mean

        which = "published recipe" if args.pretrained else "recipe"
        hint = did_you_mean(args.filter, list_models(pretrained=args.pretrained), cutoff=0.5)
        raise UserInputError(f"No {which} matches {args.filter!r}.{hint} `ssl-zoo list` shows them all.")
    rows = [("recipe", "method", "backbone", "dataset", "size", "epochs", "license", "weights")]
    for name in names:
        r = get_recipe(name)
        method = r.method if r.method != "synth" else f"synth({r.method_args.get('base', '?')})"
        rows.append((name, method, r.backbone.arch, r.dataset, str(r.image_size), str(r.train.epochs),
                     r.weights.license, r.weights.hf_hub_id or r.weights.url or r.weights.file or "not published"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    return 0


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="ssl-zoo", description="Self-supervised encoders: recipes, training, "
                                     "evaluation and Hub weights.")
    parser.add_argument("--version", action="version", version=f"ssl_zoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, builder, _, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Build only the chosen subcommand's arguments: importing every module would make `ssl-zoo list` slow.
        if list(argv[:1]) == [name]:
            lookup(module, builder)(p)
    return parser


def lookup(module: str, name: str) -> Any:
    """``name`` in ``module``, or ``function`` in ``other.module`` when ``name`` is ``"other.module:function"``."""
    other, _, attr = name.rpartition(":")
    return getattr(importlib.import_module(other or module), attr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from .errors import SslZooError, report_user_error

    try:
        try:
            args = build_parser(argv).parse_args(argv)
            module, _, runner, _ = COMMANDS[args.command]
            return int(lookup(module, runner)(args) or 0)
        finally:  # also after --help's SystemExit: a reader that has gone is caught below, not at exit
            sys.stdout.flush()
    except SslZooError as exc:  # the one place user errors become a line and an exit code
        return report_user_error(exc)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return stdout_closed()


def stdout_closed() -> int:
    """The reader of our stdout has gone (`ssl-zoo list | head -1`): stop quietly, as a Unix tool does.

    Python's recipe (docs of the signal module): point stdout at /dev/null so the flush at exit cannot fail
    again. The exit code is 141 = 128 + SIGPIPE, what a tool killed by SIGPIPE reports (`yes | head -1`): the
    output was cut short, and `set -o pipefail` scripts see the same status they already handle for other tools.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout replaced by an object without a file descriptor
        pass
    return 141


if __name__ == "__main__":
    sys.exit(main())
