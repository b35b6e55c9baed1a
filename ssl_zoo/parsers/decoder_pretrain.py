"""Arguments of ``ssl-zoo pretrain-decoder`` (runner: ``ssl_zoo.decoder_pretrain.run_cli``)."""
from __future__ import annotations

import argparse

# ssl_zoo.decoder_pretrain's constants (tests/test_cli_imports.py keeps them equal)
DEFAULT_EPOCHS = 200
ADAM_LR = 1e-3


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a synth recipe, e.g. moco_v2_synth_r50_cub (its encoder init and decoder)")
    parser.add_argument("--data", default=None, help="dataset folder")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"default: the recipe's ({DEFAULT_EPOCHS} in the paper)")
    parser.add_argument("--batch-size", type=int, default=None, help="global batch (default: the recipe's)")
    parser.add_argument("--lr", type=float, default=ADAM_LR, help="Adam learning rate at the recipe's batch size")
    parser.add_argument("--output", default=None, help="run folder (default runs/RECIPE_decoder)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="PATH",
                        help="continue from OUTPUT/checkpoint.pt, or from PATH")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of the decoder init and data order (default 0)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override, e.g. --set init=None --set image_size=64")


__all__ = ["configure_parser"]
