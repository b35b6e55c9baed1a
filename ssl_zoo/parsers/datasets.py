"""Arguments of ``ssl-zoo datasets`` (runner: ``ssl_zoo.data.cli.run_cli``)."""
from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="a dataset name: show its layout (and, with --data, its contents)")
    parser.add_argument("--data", metavar="DIR", help="the dataset's root folder: load it and print a summary")
    parser.add_argument("--split", default=None, help="split to load with --data (default: every split)")
    parser.add_argument("--check", action="store_true", help="with --data: decode every image, list unreadable ones")


__all__ = ["configure_parser"]
