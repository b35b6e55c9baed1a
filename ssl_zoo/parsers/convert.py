"""Arguments of ``ssl-zoo convert`` (runner: ``ssl_zoo.convert.run_cli``)."""
from __future__ import annotations

import argparse
import json

# ssl_zoo.convert.FILTERS's keys (tests/test_cli_imports.py keeps them equal)
SOURCES = ("lightly", "moco", "simsiam", "solo", "timm", "torchvision")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="upstream checkpoint (.pth/.pth.tar/.ckpt/.pt/.safetensors)")
    parser.add_argument("--source", required=True, choices=SOURCES, help="upstream key layout")
    parser.add_argument("--arch", default=None, help="timm architecture (default: the checkpoint's 'arch' or resnet50)")
    parser.add_argument("--recipe", default=None, help="ssl_zoo recipe the weights correspond to (sets arch, method, "
                        "dataset in config.json)")
    parser.add_argument("--model-args", default=None, type=json.loads, metavar="JSON",
                        help='extra timm.create_model arguments as JSON, e.g. \'{"layers": [1, 1, 1, 1]}\'')
    parser.add_argument("--method", default=None, help="method name recorded in config.json when no --recipe")
    parser.add_argument("--output", "--out", dest="out", required=True,
                        help="output folder (model.safetensors + config.json)")


__all__ = ["configure_parser"]
