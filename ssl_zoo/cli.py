"""``ssl-zoo``: one command, one subcommand per job. Each subcommand lives in its own module
(imported only when used) and provides ``configure_parser(parser)`` and ``run_cli(args) -> int``."""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

# subcommand -> (module, parser-builder, runner, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "list": ("ssl_zoo.cli", "configure_list_parser", "run_list",
             "list recipes (method, backbone, dataset, license, weights)"),
    "train": ("ssl_zoo.train", "configure_parser", "run_cli",
              "train a recipe (also: accelerate launch -m ssl_zoo.train)"),
    "demo": ("ssl_zoo.demo", "configure_parser", "run_cli",
             "train the MoCo v2 demo on the embedded digits and show k-NN before/after"),
    "datasets": ("ssl_zoo.data", "configure_parser", "run_cli",
                 "list dataset names and the folder layout each expects"),
    "eval": ("ssl_zoo.evaluation", "configure_parser", "run_cli",
             "evaluate an encoder: linear probe, retrieval, k-NN, fine-tuning, transfer, random-crop robustness"),
    "pretrain-decoder": ("ssl_zoo.decoder_pretrain", "configure_parser", "run_cli",
                         "pre-train the synth decoder with the encoder frozen"),
    "visualize": ("ssl_zoo.visualize", "configure_parser", "run_cli", "reconstruction and Grad-CAM picture grids"),
    "reproduce": ("ssl_zoo.reproduce", "configure_parser", "run_cli",
                  "run a recipe's paper pipeline: pre-training, its evaluation protocols, results vs paper, card, "
                  "push"),
    "push": ("ssl_zoo.hub", "configure_push_parser", "run_push",
             "publish a run or model folder to the Hugging Face Hub"),
    "convert": ("ssl_zoo.convert", "configure_parser", "run_cli",
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
            getattr(importlib.import_module(module), builder)(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from .errors import SslZooError, report_user_error

    try:
        args = build_parser(argv).parse_args(argv)
        module, _, runner, _ = COMMANDS[args.command]
        return int(getattr(importlib.import_module(module), runner)(args) or 0)
    except SslZooError as exc:  # the one place user errors become a line and an exit code
        return report_user_error(exc)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
