"""MoCo v2 (Chen, Fan, Girshick, He 2020; official code facebookresearch/moco).

query encoder f + projection g ........ q = normalize(g(f(x1)))
momentum key encoder f_k + g_k ........ k = normalize(g_k(f_k(x2))), no gradient
loss ................................... InfoNCE(q, k, queue), temperature 0.2
after each optimiser step .............. theta_k <- m * theta_k + (1 - m) * theta_q, m = 0.999
queue .................................. keys of the *global* batch (all-gathered) replace the oldest

BatchNorm groups. ``bn_group_size`` images share BatchNorm statistics, in the query AND the key
encoder (default 32: the official 8-GPU run normalises each GPU's 32 images; its single-GPU CIFAR
demo splits BatchNorm into groups inside one pass). ``ssl_zoo.batchnorm.SplitBatchNorm2d`` does the
split within one forward pass; a process whose batch is <= the group size is not split further,
so 8 processes x 32 images train exactly as the official run, and 1 process x 256 images too.

Shuffle-BN. BatchNorm lets a query "see" its key through shared batch statistics. The official
code shuffles the key batch across GPUs so each key is normalised with statistics of a different
group than its query. We do the same: the key batch is permuted (globally across processes under
torch.distributed, as the official code does, and within the process otherwise), encoded with
its BN groups, then un-permuted. ``shuffle_bn=False`` turns it off.

``MomentumQueueMixin`` (momentum copies, queue, shuffle-BN key encoding) is reused by LeOCLR
and by the synth add-on, so each of those files only holds what differs.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..batchnorm import convert_split_batchnorm
from ..distributed import broadcast_, concat_all_gather, is_distributed, rank, world_size
from ..heads import moco_v2_head
from ..losses import info_nce
from .base import SSLMethod


@torch.no_grad()
def momentum_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """theta_target <- m * theta_target + (1 - m) * theta_online, parameters only.

    As in the official code, BatchNorm buffers are not copied: the key encoder's running statistics
    follow its own (shuffled, grouped) key batches.
    """
    targets = list(target.parameters())
    onlines = [p.detach() for p in online.parameters()]
    if len(targets) != len(onlines):
        raise ValueError(f"momentum_update_: {len(targets)} target vs {len(onlines)} online parameters.")
    # one foreach kernel per op for the whole list (as timm's ModelEmaV3), the same arithmetic as a loop
    torch._foreach_mul_(targets, momentum)
    torch._foreach_add_(targets, onlines, alpha=1.0 - momentum)


@torch.no_grad()
def fifo_write_(buffer: Tensor, ptr: Tensor, rows: Tensor) -> int:
    """Write the rows of every process (all-gathered, rank order) over the oldest rows of a ring buffer.

    ``ptr`` (a 0-d long tensor) points at the oldest row and advances with wrap-around. Returns the
    number of rows written. Shared by MoCo's key queue and the synth feature bank.
    """
    rows = concat_all_gather(rows.detach().float().contiguous())
    size = buffer.shape[0]
    if rows.shape[0] > size:
        rows = rows[-size:]
    idx = (ptr + torch.arange(rows.shape[0], device=rows.device)) % size
    buffer[idx] = rows
    ptr.copy_((ptr + rows.shape[0]) % size)
    return rows.shape[0]


class MomentumQueueMixin:
    """Momentum key encoder + projection, a queue of keys, BatchNorm groups and shuffle-BN key encoding."""

    queue: Tensor
    queue_ptr: Tensor

    def _init_momentum_queue(self, projector: nn.Module, dim: int, queue_size: int, momentum: float,
                             shuffle_bn: bool, bn_group_size: int | None) -> None:
        from ..errors import UserInputError

        if queue_size < 1:
            raise UserInputError(f"queue_size must be >= 1, got {queue_size}.")
        if not 0.0 <= momentum <= 1.0:
            raise UserInputError(f"momentum (of the key encoder) must be in [0, 1], got {momentum}; "
                                 f"MoCo uses 0.99-0.999.")
        if bn_group_size is not None and bn_group_size < 1:
            raise UserInputError(f"bn_group_size must be >= 1 or None, got {bn_group_size}.")
        # Split BatchNorm first, so the momentum copy has the same groups as the query encoder.
        self.encoder = convert_split_batchnorm(self.encoder, bn_group_size)
        self.projector = projector
        self.key_encoder = copy.deepcopy(self.encoder)
        self.key_projector = copy.deepcopy(projector)
        for p in [*self.key_encoder.parameters(), *self.key_projector.parameters()]:
            p.requires_grad_(False)
        self.momentum = momentum
        self.shuffle_bn = shuffle_bn
        self.bn_group_size = bn_group_size
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    # -- encoders ---------------------------------------------------------
    def encode_query(self, x: Tensor) -> Tensor:
        return F.normalize(self.projector(self.encoder(x)).float(), dim=1)

    @torch.no_grad()
    def encode_key(self, x: Tensor) -> Tensor:
        """Normalised keys from the momentum encoder, with shuffle-BN (see module docstring)."""
        if not self.shuffle_bn:
            return F.normalize(self.key_projector(self.key_encoder(x)).float(), dim=1)
        x, unshuffle = self._shuffle(x)
        keys = self.key_projector(self.key_encoder(x))  # one pass; SplitBatchNorm2d forms the groups
        return F.normalize(unshuffle(keys).float(), dim=1)

    def _shuffle(self, x: Tensor):
        if not is_distributed():
            perm = torch.randperm(x.shape[0], device=x.device)
            return x[perm], lambda y: y[torch.argsort(perm)]
        # Official MoCo batch shuffle across processes: gather, permute globally, take our slice.
        local = x.shape[0]
        x_all = concat_all_gather(x)
        perm = broadcast_(torch.randperm(x_all.shape[0], device=x.device))
        mine = perm.view(world_size(), -1)[rank()]

        def unshuffle(y: Tensor) -> Tensor:
            y_all = concat_all_gather(y)
            return y_all[torch.argsort(perm)].view(world_size(), local, -1)[rank()]

        return x_all[mine], unshuffle

    def dataset_warnings(self, num_images: int) -> list[str]:
        size = self.queue.shape[0]
        if size > num_images:
            return [f"queue_size {size} is larger than the training set ({num_images} images): the queue holds "
                    f"several stale keys of every image as negatives. Use a queue_size below {num_images}."]
        return []

    # -- what synth uses (ssl_zoo.methods.base.SynthBase) ------------------------
    def pair_head(self, h: Tensor) -> Tensor:
        """The online head for synth's L_pair: the projector g."""
        return self.projector(h)

    @torch.no_grad()
    def gradcam_target(self, views: Sequence[Tensor]) -> Tensor:
        """The momentum key of the last view; ``forward(views, gradcam_target=...)`` reuses it."""
        return self.encode_key(views[-1])

    def positive_pair_loss(self, h: Tensor, target: Tensor) -> Tensor:
        """L_gc: InfoNCE of g(h) against the key ``target``, the queue as negatives (before this step's enqueue)."""
        return info_nce(F.normalize(self.projector(h).float(), dim=1), target, self.queue.clone().detach(),
                        self.temperature)

    # -- queue ------------------------------------------------------------
    def contrastive_loss(self, query: Tensor, key: Tensor, temperature: float) -> Tensor:
        return info_nce(query, key, self.queue.clone().detach(), temperature)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Replace the oldest queue entries with the keys of every process (wraps around)."""
        fifo_write_(self.queue, self.queue_ptr, keys)

    @torch.no_grad()
    def update_momentum_encoders(self) -> None:
        momentum_update_(self.key_encoder, self.encoder, self.momentum)
        momentum_update_(self.key_projector, self.projector, self.momentum)

    def online_parameters(self) -> list[nn.Parameter]:
        return [p for p in [*self.encoder.parameters(), *self.projector.parameters()] if p.requires_grad]


class MoCoV2(MomentumQueueMixin, SSLMethod):
    """MoCo v2: a momentum key encoder and a queue of negatives (module docstring)."""

    view_names = ("crop", "crop")

    def __init__(self, encoder: nn.Module, *, image_size: int = 224, proj_hidden_dim: int | None = None,
                 proj_dim: int = 128, queue_size: int = 65536, temperature: float = 0.2, momentum: float = 0.999,
                 symmetric: bool = False, shuffle_bn: bool = True, bn_group_size: int | None = 32) -> None:
        super().__init__(encoder)
        hidden = proj_hidden_dim or self.num_features  # official: Linear(dim_mlp, dim_mlp), dim_mlp = fc.in_features
        self._init_momentum_queue(moco_v2_head(self.num_features, hidden, proj_dim), proj_dim, queue_size,
                                  momentum, shuffle_bn, bn_group_size)
        self.temperature = temperature
        self.symmetric = symmetric

    def forward(self, views: Sequence[Tensor], gradcam_target: Tensor | None = None) -> dict[str, Tensor]:
        """``gradcam_target``: the key of ``views[-1]`` already computed (synth shares it; one key pass fewer)."""
        self.check_views(views)
        x1, x2 = views
        q1 = self.encode_query(x1)
        k2 = self.encode_key(x2) if gradcam_target is None else gradcam_target
        loss = self.contrastive_loss(q1, k2, self.temperature)
        keys = k2
        if self.symmetric:  # both views serve as query; the mean keeps the loss scale of the asymmetric case
            q2 = self.encode_query(x2)
            k1 = self.encode_key(x1)
            loss = 0.5 * (loss + self.contrastive_loss(q2, k1, self.temperature))
            keys = torch.cat([k2, k1])
        self.enqueue(keys)
        with torch.no_grad():
            pos = (q1.detach() * k2).sum(1).mean()
        return {"loss": loss, "loss_infonce": loss.detach(), "pos_sim": pos}

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        self.update_momentum_encoders()
