"""Arguments of ``ssl-zoo visualize`` (runner: ``ssl_zoo.visualize.run_cli``)."""
from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_OR_MODEL", help="run folder (checkpoint.pt) or exported model folder")
    parser.add_argument("--recipe", default=None, help="recipe name (default: the one recorded in the folder)")
    parser.add_argument("--data", default=None, help="dataset folder (default: the embedded digits for digits recipes)")
    parser.add_argument("--dataset", default=None, help="dataset name (default: the recipe's)")
    parser.add_argument("--split", default="train", help="dataset split the pictures come from (default train)")
    parser.add_argument("--num-images", type=int, default=8, help="rows of the grid, one image each (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="which images and which noise (default 0)")
    parser.add_argument("--output", "--out", dest="out", default="grid.png", help="output PNG (default grid.png)")


__all__ = ["configure_parser"]
