"""LeOCLR (Alkhalefi, Leontidis, Zhong): MoCo v2 with the original image as the anchor.

Three views per image (``view_names``): the original ``x`` (whole image resized, no crop,
then MoCo v2 colour / grayscale / blur / flip) and two random resized crops ``x1``, ``x2``
with the full MoCo v2 augmentation (paper Sec. 3, Fig. 3, Algorithm 1).

query (original) ...... u  = normalize(g(f(x)))
keys (crops) .......... v1 = normalize(g_k(f_k(x1))), v2 = normalize(g_k(f_k(x2))), no gradient
loss (Eq. 3) .......... l(u, sg(v1)) + l(u, sg(v2)), each MoCo's InfoNCE against the queue
after each step ....... momentum update of (f_k, g_k), m = 0.999 (Eq. 1)

The two crops are never compared with each other: each is only pulled toward the
original. Eq. 3 sums over the mini-batch; we average each term over the batch (as MoCo's
cross-entropy does) and *sum* the two terms, so the loss is twice a MoCo v2 loss in scale.
Which keys enter the queue (``enqueue``): ``"both"`` (default) enqueues both crops' keys, ``2 x global
batch`` per step (all-gathered across processes), so at the same ``queue_size`` K the queue holds the keys of
the last K / (2 B) steps; ``"one"`` enqueues the first crop's keys only, B per step, the K / B steps of
MoCo v2's queue. The paper names no rule; the default follows its text (docs/methods.md, LeOCLR): both crops
are the keys of the step ("v+ = f_k(x^i) (i = 1, 2)", Sec. 3.1) and MoCo's dictionary, which LeOCLR's Eq. 2
uses, is the queue of a step's encoded keys.

Momentum copies, the queue, BatchNorm groups (``bn_group_size`` images, query and key encoder)
and shuffle-BN come from ``moco.MomentumQueueMixin``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..heads import moco_v2_head
from .base import SSLMethod
from .moco import MomentumQueueMixin

# "both": the two crops' keys (2B per step, the default); "one": the first crop's keys (B per step, as MoCo v2).
ENQUEUE_POLICIES = ("both", "one")


class LeOCLR(MomentumQueueMixin, SSLMethod):
    """LeOCLR on MoCo v2: the original image's view is the positive of two crops (module docstring)."""

    view_names = ("original", "crop", "crop")

    def __init__(self, encoder: nn.Module, *, image_size: int = 224, proj_hidden_dim: int | None = None,
                 proj_dim: int = 128, queue_size: int = 65536, temperature: float = 0.2, momentum: float = 0.999,
                 shuffle_bn: bool = True, bn_group_size: int | None = 32, enqueue: str = "both") -> None:
        super().__init__(encoder)
        if enqueue not in ENQUEUE_POLICIES:
            from ..errors import UserInputError

            raise UserInputError(f"enqueue must be one of {', '.join(map(repr, ENQUEUE_POLICIES))} (which crops' keys "
                                 f"enter the queue), got {enqueue!r}.")
        self.enqueue_policy = enqueue
        self.image_size = image_size
        hidden = proj_hidden_dim or self.num_features  # MoCo v2 head: Linear(dim_mlp, dim_mlp)-ReLU-Linear
        self._init_momentum_queue(moco_v2_head(self.num_features, hidden, proj_dim), proj_dim, queue_size,
                                  momentum, shuffle_bn, bn_group_size)
        self.temperature = temperature

    def forward(self, views: Sequence[Tensor], gradcam_target: Tensor | None = None) -> dict[str, Tensor]:
        """``gradcam_target``: the key of ``crop2`` already computed (synth shares it)."""
        self.check_views(views)
        original, crop1, crop2 = views
        u = self.encode_query(original)
        # Each crop batch is encoded (and shuffle-BN'd) on its own, like one MoCo key batch.
        v1 = self.encode_key(crop1)
        v2 = self.encode_key(crop2) if gradcam_target is None else gradcam_target
        loss_1 = self.contrastive_loss(u, v1, self.temperature)
        loss_2 = self.contrastive_loss(u, v2, self.temperature)
        loss = loss_1 + loss_2
        self.enqueue(torch.cat([v1, v2]) if self.enqueue_policy == "both" else v1)
        with torch.no_grad():
            u_d = u.detach()
            pos_1, pos_2 = (u_d * v1).sum(1).mean(), (u_d * v2).sum(1).mean()
        return {"loss": loss, "loss_orig_crop1": loss_1.detach(), "loss_orig_crop2": loss_2.detach(),
                "pos_sim": 0.5 * (pos_1 + pos_2)}

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        self.update_momentum_encoders()
