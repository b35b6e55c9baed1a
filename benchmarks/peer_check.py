"""Peer check: a recipe's method rebuilt from an independent library's parts (lightly), trained with a plain loop.

    pip install -e ".[peer]"
    python benchmarks/peer_check.py simsiam_r18_photo_patches --seed 1 --json runs/peer/simsiam_seed1.json

If ssl_zoo's method code were wrong, an independent implementation with the same recipe would land elsewhere.
So only the method code differs here: the heads (``MoCoProjectionHead``, ``SimSiamProjectionHead``,
``SimSiamPredictionHead``), the losses (``NTXentLoss`` with a memory bank for MoCo v2, ``NegativeCosineSimilarity``
for SimSiam), the momentum update, shuffle-BN and BatchNorm groups (``update_momentum``, ``batch_shuffle`` /
``batch_unshuffle``, ``SplitBatchNorm``), the weight-decay split (``get_weight_decay_parameters``) and the
learning-rate curve (``cosine_warmup_schedule``) are lightly's, run by the plain PyTorch loop below (no
Accelerate, no ``ssl_zoo.train``). Everything else is ours on purpose: the recipe's hyperparameters (global
batch, ``base_lr * batch / lr_batch_denom``, SGD momentum, weight decay and its norm/bias exemption, warm-up
epochs, epochs, temperature, queue size, key momentum, BatchNorm group size, predictor lr fixed or not), the
same data and view transforms (``ssl_zoo.transforms``), the same timm backbone built under the same seed (the
JSON records that its weights equal ``ssl_zoo.evaluation.baseline.untrained_encoder``'s), and the same
evaluation as ``benchmarks/compare.py`` (``evaluate_encoder``: weighted k-NN k = 20 and 200, the linear probe).

Differences that remain, by design of the other library: lightly's cosine ends at its last step (ours one step
later), and its memory bank drops the keys that would wrap around the end of the bank (ours wraps; no key is
dropped when the queue size is a multiple of the batch, as in the digits-style recipes).

``--ours RUN_DIR`` also evaluates an encoder trained by ``ssl-zoo train`` / ``benchmarks/compare.py`` the same way
and writes both side by side. The JSON (``--json``) holds the command, the machine, the settings, the loss per
epoch, the metrics (fractions) and the peer library's version.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

import ssl_zoo
from ssl_zoo.recipe import Recipe
from ssl_zoo.report import command_line, machine_info, write_json
from ssl_zoo.train import resolve_recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import evaluate_encoder  # noqa: E402

METHODS = ("moco_v2", "simsiam")


class PeerCheckError(ValueError):
    """A recipe or setting the peer implementation does not cover."""


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise PeerCheckError(message)


def check_recipe(recipe: Recipe) -> None:
    """Refuse what the peer implementation does not rebuild, in one line naming it."""
    _need(recipe.method in METHODS, f"peer_check covers {METHODS}, not {recipe.method!r} ({recipe.name}).")
    _need(recipe.train.optimizer == "sgd", f"{recipe.name}: optimizer {recipe.train.optimizer!r}; peer_check "
                                           "rebuilds SGD recipes only.")
    _need(recipe.train.schedule == "cosine", f"{recipe.name}: schedule {recipe.train.schedule!r}; peer_check "
                                             "rebuilds the cosine schedule only.")
    _need(recipe.backbone.init is None, f"{recipe.name}: backbone init {recipe.backbone.init!r}; peer_check starts "
                                        "from the random initialisation only.")
    args = recipe.method_args
    if recipe.method == "simsiam":
        _need(args.get("proj_layers", 3) == 3, f"{recipe.name}: lightly's SimSiamProjectionHead has 3 layers, the "
                                               f"recipe asks for {args.get('proj_layers')}.")
    else:
        _need(not args.get("symmetric", False), f"{recipe.name}: the symmetric MoCo loss is not rebuilt.")


def build_backbone(recipe: Recipe, seed: int) -> nn.Module:
    """The recipe's timm backbone under ``seed`` (the same initial weights as ssl_zoo's run; recorded)."""
    import timm

    torch.manual_seed(seed)
    return timm.create_model(recipe.backbone.arch, num_classes=0, **dict(recipe.backbone.model_args))


def split_batchnorm_(module: nn.Module, num_splits: int) -> nn.Module:
    """Every BatchNorm2d becomes lightly's SplitBatchNorm (``num_splits`` groups per batch), weights kept."""
    from lightly.models.batchnorm import SplitBatchNorm

    if num_splits <= 1:
        return module
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            split = SplitBatchNorm(child.num_features, num_splits, eps=child.eps, momentum=child.momentum)
            with torch.no_grad():
                split.weight.copy_(child.weight)
                split.bias.copy_(child.bias)
            setattr(module, name, split)
        else:
            split_batchnorm_(child, num_splits)
    return module


def plain_encoder(backbone: nn.Module, recipe: Recipe) -> nn.Module:
    """The trained backbone as the plain timm model ssl_zoo evaluates (SplitBatchNorm statistics collated)."""
    import timm

    backbone.eval()  # lightly's SplitBatchNorm averages its groups' running statistics when leaving train mode
    plain = timm.create_model(recipe.backbone.arch, num_classes=0, **dict(recipe.backbone.model_args))
    state = {}
    for key, value in backbone.state_dict().items():
        target = plain.state_dict()[key]
        state[key] = value[: target.shape[0]] if value.shape != target.shape else value
    plain.load_state_dict(state, strict=True)
    return plain.eval()


class PeerSimSiam(nn.Module):
    def __init__(self, backbone: nn.Module, args: dict[str, Any]) -> None:
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

        super().__init__()
        width = int(backbone.num_features)
        proj_dim = int(args.get("proj_dim", 2048))
        self.backbone = backbone
        self.projection_head = SimSiamProjectionHead(width, args.get("proj_hidden_dim") or width, proj_dim)
        self.prediction_head = SimSiamPredictionHead(proj_dim, int(args.get("pred_hidden_dim", 512)), proj_dim)
        self.criterion = NegativeCosineSimilarity()
        self.fix_pred_lr = bool(args.get("fix_pred_lr", True))

    def loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        z0, z1 = self.projection_head(self.backbone(x0)), self.projection_head(self.backbone(x1))
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        return 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))

    def groups(self) -> list[tuple[str, list[nn.Module], bool]]:
        """(name, modules, lr fixed) per optimiser group."""
        return [("backbone_projection", [self.backbone, self.projection_head], False),
                ("prediction", [self.prediction_head], self.fix_pred_lr)]

    def after_step(self) -> None:
        pass


class PeerMoCo(nn.Module):
    def __init__(self, backbone: nn.Module, args: dict[str, Any], batch_size: int) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        width = int(backbone.num_features)
        proj_dim = int(args.get("proj_dim", 128))
        group = args.get("bn_group_size", 32)
        # A batch no larger than the group size is one group, as in ssl_zoo.batchnorm.SplitBatchNorm2d.
        splits = batch_size // group if group and batch_size > group else 1
        _need(batch_size % splits == 0, f"batch {batch_size} does not split into BatchNorm groups of {group}.")
        self.backbone = split_batchnorm_(backbone, splits)
        self.projection_head = MoCoProjectionHead(width, args.get("proj_hidden_dim") or width, proj_dim)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NTXentLoss(temperature=float(args.get("temperature", 0.2)),
                                    memory_bank_size=(int(args.get("queue_size", 65536)), proj_dim))
        self.momentum = float(args.get("momentum", 0.999))
        self.shuffle_bn = bool(args.get("shuffle_bn", True))

    def loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        from lightly.models.utils import batch_shuffle, batch_unshuffle

        query = self.projection_head(self.backbone(x0))
        with torch.no_grad():
            if self.shuffle_bn:
                x1, shuffle = batch_shuffle(x1)
            key = self.projection_head_momentum(self.backbone_momentum(x1))
            if self.shuffle_bn:
                key = batch_unshuffle(key, shuffle)
        return self.criterion(query, key)  # normalises both; the bank takes the keys after this loss

    def groups(self) -> list[tuple[str, list[nn.Module], bool]]:
        return [("backbone_projection", [self.backbone, self.projection_head], False)]

    def after_step(self) -> None:
        from lightly.models.utils import update_momentum

        update_momentum(self.backbone, self.backbone_momentum, m=self.momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, m=self.momentum)


def build_peer(recipe: Recipe, seed: int) -> PeerSimSiam | PeerMoCo:
    check_recipe(recipe)
    backbone = build_backbone(recipe, seed)
    args = dict(recipe.method_args)
    if recipe.method == "simsiam":
        return PeerSimSiam(backbone, args)
    return PeerMoCo(backbone, args, recipe.train.batch_size)


def build_optimizer(model: PeerSimSiam | PeerMoCo, recipe: Recipe, lr: float, total_steps: int,
                    warmup_steps: int) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    from lightly.models.utils import get_weight_decay_parameters
    from lightly.utils.scheduler import cosine_warmup_schedule

    cfg = recipe.train
    decay_all = cfg.decay_norm_and_bias
    groups, fixed = [], []
    for name, modules, fix_lr in model.groups():
        decay, no_decay = get_weight_decay_parameters(modules, decay_norm=decay_all, decay_bias=decay_all)
        for suffix, params, wd in ((".decay", decay, cfg.weight_decay), (".no_decay", no_decay, 0.0)):
            params = [p for p in params if p.requires_grad]
            if params:
                groups.append({"name": name + suffix, "params": params, "weight_decay": wd, "lr": lr})
                fixed.append(fix_lr)
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=cfg.sgd_momentum)
    end = cfg.min_lr / lr

    def cosine(step: int) -> float:
        return cosine_warmup_schedule(step, total_steps, 1.0, end, warmup_steps, 0.0)

    factors = [(lambda step: 1.0) if fix else cosine for fix in fixed]
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def train_peer(recipe: Recipe, seed: int, data: str | None = None, num_workers: int | None = None,
               max_steps: int | None = None, log_every: int = 50) -> tuple[nn.Module, dict[str, Any]]:
    """Train the peer implementation; returns the plain trained encoder and what the run did."""
    import random

    import numpy as np

    from ssl_zoo.data import create_dataset
    from ssl_zoo.transforms import build_multiview_transform

    model = build_peer(recipe, seed)
    from ssl_zoo.evaluation.baseline import untrained_encoder

    ours = untrained_encoder(recipe, seed).state_dict()
    plain_start = plain_encoder(copy.deepcopy(model.backbone), recipe).state_dict()
    same_start = all(torch.equal(ours[k], v) for k, v in plain_start.items())
    model.train()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    train_set = create_dataset(recipe.dataset, root=data, split=recipe.train_split,
                               transform=build_multiview_transform(("crop", "crop"), recipe.augment))
    batch = recipe.train.batch_size
    workers = recipe.train.num_workers if num_workers is None else num_workers
    loader = DataLoader(train_set, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(seed))
    steps_per_epoch = len(loader)
    _need(steps_per_epoch >= 1, f"{len(train_set)} training images are fewer than one batch of {batch}.")
    total_steps = recipe.train.epochs * steps_per_epoch
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    lr = recipe.train.base_lr * batch / recipe.train.lr_batch_denom
    warmup_steps = min(total_steps, int(round(recipe.train.warmup_epochs * steps_per_epoch)))
    optimizer, scheduler = build_optimizer(model, recipe, lr, total_steps, warmup_steps)
    step, epoch_losses = 0, []
    start = time.perf_counter()
    while step < total_steps:
        losses = []
        for views, _ in loader:
            loss = model.loss(views[0], views[1])
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"peer {recipe.method}: loss {loss.item()} at step {step}.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            model.after_step()
            losses.append(loss.item())
            step += 1
            if step % log_every == 0 or step == total_steps:
                print(f"step {step}/{total_steps} loss {loss.item():.4f} lr {scheduler.get_last_lr()[0]:.4g} "
                      f"{time.perf_counter() - start:.0f} s", flush=True)
            if step >= total_steps:
                break
        epoch_losses.append(sum(losses) / len(losses))
    wall = time.perf_counter() - start
    info = {"steps": step, "epochs": step / steps_per_epoch, "steps_per_epoch": steps_per_epoch,
            "global_batch": batch, "lr": lr, "warmup_steps": warmup_steps, "train_wall_s": wall,
            "train_images": step * batch, "images_per_s": step * batch / wall, "epoch_mean_loss": epoch_losses,
            "final_loss": epoch_losses[-1], "same_start_as_ssl_zoo": same_start}
    return plain_encoder(model.backbone, recipe), info


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="a moco_v2 or simsiam recipe (ssl-zoo list)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument("--batch-size", type=int, default=None, help="global batch (default: the recipe's)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke test)")
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--data", default=None, help="dataset root (not needed for the embedded datasets)")
    p.add_argument("--ours", default=None, metavar="RUN_DIR",
                   help="also evaluate ssl_zoo's trained encoder in RUN_DIR (same recipe and seed) beside the peer")
    p.add_argument("--no-linear", action="store_true", help="k-NN only (skips the linear probe; smoke tests)")
    p.add_argument("--log-every", type=int, default=50, help="print the loss every N steps")
    p.add_argument("--json", required=True, help="where to write the result")
    return p.parse_args(argv)


def evaluate(encoder: nn.Module, recipe: Recipe, seed: int, data: str | None, linear: bool) -> dict[str, Any]:
    if linear:
        return evaluate_encoder(encoder, recipe.name, seed, data)
    from ssl_zoo.evaluation import knn_accuracy, recipe_split_features

    train_x, train_y, test_x, test_y = recipe_split_features(encoder, recipe, data)
    return {"knn20_top1": knn_accuracy(train_x, train_y, test_x, test_y, k=20),
            "knn200_top1": knn_accuracy(train_x, train_y, test_x, test_y, k=200),
            "n_train": len(train_y), "n_test": len(test_y)}


def main(argv: Sequence[str] | None = None) -> int:
    import lightly

    args = parse_args(argv)
    recipe = resolve_recipe(args.recipe, epochs=args.epochs, batch_size=args.batch_size)
    check_recipe(recipe)  # before any data or model is built
    encoder, info = train_peer(recipe, args.seed, args.data, args.num_workers, args.max_steps, args.log_every)
    result: dict[str, Any] = {
        "command": command_line("python benchmarks/peer_check.py", argv), "machine": machine_info(),
        "recipe": recipe.name, "method": recipe.method, "seed": args.seed, "peer_library": "lightly",
        "peer_version": lightly.__version__, "method_args": dict(recipe.method_args),
        "train_cfg": recipe.to_dict()["train"], "run": info,
        "peer": evaluate(encoder, recipe, args.seed, args.data, not args.no_linear)}
    if args.ours:
        ours = ssl_zoo.create_model(recipe.name, checkpoint=args.ours)
        result["ours"] = {"run_dir": args.ours, **evaluate(ours, recipe, args.seed, args.data, not args.no_linear)}
    write_json(args.json, result)
    line = "  ".join(f"{k} {100 * v:.2f}%" for k, v in result["peer"].items() if k.endswith("top1"))
    print(f"peer {recipe.method} ({recipe.name}, seed {args.seed}): {line}; wrote {args.json}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
