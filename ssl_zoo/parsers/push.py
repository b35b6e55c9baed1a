"""Arguments of ``ssl-zoo push`` (runner: ``ssl_zoo.hub.run_push``)."""
from __future__ import annotations

import argparse

# ssl_zoo.hub / ssl_zoo.model_card constants (tests/test_cli_imports.py keeps them equal)
TRAINING_STATE_DIR = "training_state"
EVAL_DIR = "eval"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="run or model folder holding model.safetensors + config.json")
    parser.add_argument("--repo", required=True, help="Hub repo id, org/name")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", default=None, help="branch to commit to (created if missing; default main)")
    parser.add_argument("--endpoint", default=None, help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--message", default=None, help="commit message")
    parser.add_argument("--include-training-state", action="store_true",
                        help=f"also upload the run's full training state under {TRAINING_STATE_DIR}/")
    parser.add_argument("--results", nargs="+", default=[], metavar="JSON",
                        help=f"`ssl-zoo eval --output` files to put in the card's model-index "
                             f"(RUN_DIR/{EVAL_DIR}/*.json are added too); a result of a random-init encoder or "
                             f"of other weights is refused")
    parser.add_argument("--no-run-results", dest="run_results", action="store_false",
                        help=f"do not add the run folder's own {EVAL_DIR}/*.json results")


__all__ = ["configure_parser"]
