"""Arguments of ``ssl-zoo eval PROTOCOL`` and of ``benchmarks/{linear,knn,...}.py`` (runner:
``ssl_zoo.evaluation.cli.run_cli``).

One sub-parser per protocol, so ``ssl-zoo eval knn --help`` lists the k-NN options only. The namespace is the
same for every protocol: an option a protocol does not take is not on its command line but gets its default
(``args.k`` exists for ``linear`` too), so the runners, ``_validate`` and ``ssl-zoo reproduce`` read every
attribute without asking which protocol parsed it.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Collection
from typing import Any

PROTOCOLS = ("linear", "retrieval", "knn", "finetune", "transfer", "crop-robustness")
PROTOCOL_HELP = {
    "linear": "linear probe on the frozen encoder (MoCo protocol)",
    "retrieval": "leave-one-out retrieval on the test split (rank-k, mAP)",
    "knn": "weighted k-NN classification (train split as the bank)",
    "finetune": "fine-tune encoder + head with a label fraction (SimCLR protocol)",
    "transfer": "transfer fine-tuning with an lr x weight-decay grid",
    "crop-robustness": "accuracy under random crops (LeOCLR Table 6)",
}
DEFAULT_GRID_LR = (0.001, 0.01, 0.1)
DEFAULT_GRID_WD = (0.0, 1e-4)
HEAD_NAME = "head.safetensors"

ALL = frozenset(PROTOCOLS)
CLASSIFIERS = frozenset({"linear", "finetune", "transfer", "crop-robustness"})  # train a head: epochs, momentum
LINEAR_LIKE = frozenset({"linear", "crop-robustness"})  # a linear probe (crop-robustness trains one without --head)
FINETUNING = frozenset({"finetune", "transfer"})


class _Options:
    """Adds an option to a protocol's parser when the protocol takes it, else only records its default."""

    def __init__(self, parser: argparse.ArgumentParser, protocol: str) -> None:
        self.parser, self.protocol = parser, protocol
        self.defaults: dict[str, Any] = {}

    def add(self, group: Any, *flags: str, only: Collection[str] = ALL, refused: Collection[str] = (),
            **kwargs: Any) -> None:
        """``refused``: protocols that accept the option without showing it, so that their check can say
        why it does not apply (``transfer --lr``: the grid chooses the lr) instead of argparse's bare refusal."""
        if self.protocol in only or self.protocol in refused:
            group.add_argument(*flags, **{**kwargs, "help": argparse.SUPPRESS} if self.protocol in refused
                               else kwargs)
            return
        dest = kwargs.get("dest") or flags[0].lstrip("-").replace("-", "_")
        action = kwargs.get("action")
        default = {"store_true": False, "store_false": True}.get(action, kwargs.get("default"))  # type: ignore[arg-type]
        self.defaults[dest] = default


def configure_protocol_parser(parser: argparse.ArgumentParser, protocol: str) -> None:
    """The options of one protocol on ``parser`` (``args.protocol`` is set to ``protocol``)."""
    o = _Options(parser, protocol)
    p = parser
    o.add(p, "--model", required=True,
          help="recipe name (random init unless --pretrained/--checkpoint), 'hf-hub:org/repo[@rev]', "
               "or a local run/model folder with model.safetensors + config.json")
    o.add(p, "--pretrained", action="store_true", help="load the recipe's published weights")
    o.add(p, "--checkpoint", default=None, help="weights file or folder for a recipe name")
    o.add(p, "--dataset", default=None,
          help="create_dataset name (default: what the model trained on, from its config.json; with --data, the "
               "folder's layout; else the embedded digits)")
    o.add(p, "--data", default=None, metavar="ROOT",
          help="dataset root folder (default: the model's training data); a class tree without a test/ folder "
               "needs --holdout")
    o.add(p, "--train-split", default="train",
          help="split the classifier / k-NN bank uses" if protocol != "retrieval"
          else "split --holdout divides (retrieval itself reads only --test-split)")
    o.add(p, "--test-split", default="test", help="split that is evaluated (retrieval: queries + gallery)")
    o.add(p, "--image-size", type=int, default=None,
          help="crop size (default: the model's pretrained_cfg input size, else 224)")
    o.add(p, "--batch-size", type=int, default=256, help="global batch size (default 256)")
    o.add(p, "--num-workers", type=int, default=min(4, os.cpu_count() or 1),
          help="DataLoader workers per process (default: min(4, CPU count))")
    o.add(p, "--chunk-size", type=int, default=256, only={"knn", "retrieval"},
          help="queries per similarity block (memory)")
    o.add(p, "--seed", type=int, default=0, help="classifier init, shuffling and label-fraction subset")
    o.add(p, "--cpu", action="store_true", help="run on CPU even when a GPU is present")
    o.add(p, "--output", default=None, metavar="JSON", help="write the result here")
    o.add(p, "--markdown", default=None, metavar="FILE", help="append the Markdown row to this file")
    o.add(p, "--holdout", type=float, default=None, metavar="FRACTION",
          help="evaluate on a seeded, class-stratified FRACTION of the 'train' split held out from the "
               "rest (for a flat class-folder tree, which has no test split); recorded in the JSON")
    o.add(p, "--skip-bad-images", dest="on_error", action="store_const", const="skip", default="raise",
          help="replace unreadable/truncated images (a warning names each) instead of stopping")

    knn = p.add_argument_group("k-NN")
    o.add(knn, "--k", type=int, nargs="+", default=None, only={"knn"},
          help="neighbour counts (default 20 200, each clamped to the bank's size with a note)")
    o.add(knn, "--temperature", type=float, default=0.07, only={"knn"}, help="vote weight exp(s / T) (default 0.07)")

    lin = p.add_argument_group("classifier training" if protocol in FINETUNING else
                               "linear probe (MoCo protocol defaults)")
    o.add(lin, "--epochs", type=int, default=None, only=CLASSIFIERS,
          help={"linear": "default 100", "crop-robustness": "linear probe epochs (default 100)",
                "finetune": "default 60 for <= 1%% labels, else 30", "transfer": "default 30"}.get(protocol))
    o.add(lin, "--lr", type=float, default=None, only=LINEAR_LIKE | {"finetune"}, refused={"transfer"},
          help="finetune: default --base-lr x batch / 256" if protocol == "finetune"
          else "default 30 (the MoCo protocol)")
    o.add(lin, "--momentum", type=float, default=0.9, only=CLASSIFIERS)
    o.add(lin, "--weight-decay", type=float, default=None, only=LINEAR_LIKE | {"finetune"}, refused={"transfer"},
          help="default 0")
    o.add(lin, "--milestones", type=int, nargs="*", default=[60, 80], only=LINEAR_LIKE,
          help="epochs where lr is x0.1")
    o.add(lin, "--label-fraction", type=float, default=1.0, only=LINEAR_LIKE | {"finetune"},
          help="share of each class's train images with labels (linear: 1.0, 0.5, 0.2; finetune: "
               "0.01 0.02 0.05 0.1 0.2 0.5 1)")
    o.add(lin, "--cached-features", action="store_true", only=LINEAR_LIKE,
          help="extract train/test features once and train the classifier on them (fast; no train-time "
               "augmentation)")

    ft = p.add_argument_group("fine-tuning (SimCLR protocol defaults)")
    o.add(ft, "--split-file", default=None, metavar="TXT", only={"finetune"},
          help="the labelled images, one file name per line (SimCLR's ImageNet 1percent.txt / "
               "10percent.txt); replaces --label-fraction")
    o.add(ft, "--base-lr", type=float, default=0.05, only={"finetune"},
          help="lr when --lr is not given: base-lr x batch / 256 (SimCLR: 0.05)")
    o.add(ft, "--no-nesterov", dest="nesterov", action="store_false", only=FINETUNING, help="plain momentum SGD")
    o.add(ft, "--schedule", choices=("cosine", "constant"), default="cosine", only=FINETUNING,
          help="lr schedule (default cosine)")
    o.add(ft, "--no-sync-bn", dest="sync_bn", action="store_false", only=FINETUNING,
          help="per-process BatchNorm statistics under several processes (default: SyncBatchNorm, "
               "the statistics of the global batch)")
    o.add(ft, "--save-model", default=None, metavar="DIR", only={"finetune"},
          help=f"write the fine-tuned encoder to DIR/encoder (model.safetensors + config.json) and "
               f"the head to DIR/{HEAD_NAME}")
    o.add(ft, "--grid-lr", type=float, nargs="+", default=list(DEFAULT_GRID_LR), only={"transfer"},
          help=f"learning rates of the grid (default {' '.join(map(str, DEFAULT_GRID_LR))})")
    o.add(ft, "--grid-wd", type=float, nargs="+", default=list(DEFAULT_GRID_WD), only={"transfer"},
          help=f"weight decays of the grid (default {' '.join(map(str, DEFAULT_GRID_WD))})")
    o.add(ft, "--val-fraction", type=float, default=0.2, only={"transfer"},
          help="share of each class of the train split held out to select the grid cell")

    cr = p.add_argument_group("crop robustness")
    o.add(cr, "--crop-scales", nargs="+", default=["0.08,1", "0.2,1", "0.5,1"], metavar="LOW,HIGH",
          only={"crop-robustness"},
          help="RandomResizedCrop scale ranges of the random-crop tests (default 0.08,1 0.2,1 0.5,1)")
    o.add(cr, "--no-center", dest="center", action="store_false", only={"crop-robustness"},
          help="skip the centre-crop test")
    o.add(cr, "--head", default=None, metavar="FILE", only={"crop-robustness"},
          help=f"a fine-tuned head ({HEAD_NAME} written by `eval finetune --save-model DIR`; pass "
               "--model DIR/encoder); default: train a linear probe (MoCo protocol) first")
    parser.set_defaults(protocol=protocol, **o.defaults)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """``PROTOCOL`` and that protocol's options (``ssl-zoo eval PROTOCOL --help`` lists them)."""
    sub = parser.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True,
                                help=", ".join(PROTOCOLS) + " (`PROTOCOL --help` lists its options)")
    for protocol in PROTOCOLS:
        configure_protocol_parser(sub.add_parser(protocol, help=PROTOCOL_HELP[protocol],
                                                 description=PROTOCOL_HELP[protocol]), protocol)


__all__ = ["PROTOCOLS", "PROTOCOL_HELP", "DEFAULT_GRID_LR", "DEFAULT_GRID_WD", "HEAD_NAME", "configure_parser",
           "configure_protocol_parser"]
