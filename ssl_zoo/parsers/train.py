"""Arguments of ``ssl-zoo train`` and ``python -m ssl_zoo.train`` (runner: ``ssl_zoo.train.run_cli``)."""
from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe name (see `ssl-zoo list`)")
    parser.add_argument("--data", default=None,
                        help="dataset folder: the recipe dataset's own layout, a class-per-folder tree, or any folder "
                             "of images (unlabelled, searched recursively)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: the recipe's); with --resume, a larger value extends the run")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="GLOBAL batch size over all processes and accumulation steps (default: the recipe's); "
                             "each process takes batch / (processes x grad_accum) images per step")
    parser.add_argument("--lr", type=float, default=None,
                        help="base lr, replaces the recipe's base_lr; still scaled by global batch / lr_batch_denom")
    parser.add_argument("--output", default=None, help="run folder (default runs/RECIPE)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="PATH",
                        help="continue from OUTPUT/checkpoint.pt, or from PATH (more --epochs extends a finished run)")
    parser.add_argument("--allow-changed", action="append", default=[], metavar="seed,recipe,data",
                        help="with --resume: continue although the seed, recipe or data (file list, sizes and "
                             "mtimes) differ from the first run's (refused otherwise)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in --output (deletes its checkpoint, log and export first)")
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None,
                        help="autocast precision (default: bf16 on a bf16-capable GPU, else no)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="NHWC memory format for the model and batches (default: on for CUDA, off on CPU, where "
                             "it pays only from ~64 px)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the method's forward (the first steps compile: minutes on a CPU)")
    parser.add_argument("--compile-backend", default="inductor", metavar="NAME",
                        help="torch.compile backend for --compile (default inductor)")
    parser.add_argument("--augment-on-device", action="store_true",
                        help="DataLoader workers only decode, crop and flip; colour jitter, grayscale and blur run "
                             "batched on the training device (needs kornia; for GPUs starved by their loaders)")
    parser.add_argument("--knn-every", type=int, default=None, metavar="N",
                        help="every N epochs: k-NN top-1 (k=20) on the dataset's test split (a class tree without "
                             "one: a seeded 20%% of it) and the collapse monitor, logged to log.jsonl, the progress "
                             "bar and trackers; off (said once) on unlabelled images")
    parser.add_argument("--grad-accum", type=int, default=1,
                        help="micro-steps per optimiser step; the global --batch-size is split over them (default 1)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initial weights, data order, augmentations and shuffle-BN (default 0)")
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    parser.add_argument("--log-with", default=None, help="Accelerate tracker: tensorboard, wandb, ... (or all)")
    parser.add_argument("--log-every", type=int, default=10, help="log every N optimiser steps")
    parser.add_argument("--skip-bad-images", dest="on_error", action="store_const", const="skip", default="raise",
                        help="replace unreadable/truncated images (a warning names each) instead of stopping")
    parser.add_argument("--collective-timeout", type=float, default=None, metavar="SECONDS",
                        help="with several processes, stop when one waits this long for the others "
                             "(default $SSL_ZOO_COLLECTIVE_TIMEOUT or 1800)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override, e.g. --set queue_size=4096 --set crop_scale=(0.2,1.0)")


__all__ = ["configure_parser"]
