"""SimSiam (Chen & He, CVPR 2021; official code facebookresearch/simsiam).

encoder f (ResNet, zero-init residual) ...... h = f(x)
projector g (3 layers, ends in BN) .......... z = g(h): Linear-BN-ReLU-Linear-BN-ReLU-Linear-BN(affine=False)
                                              (CIFAR, paper Appendix D: 2 layers, Linear-BN-ReLU-Linear-BN)
predictor q (2-layer bottleneck) ............ p = q(z): Linear(d, 512)-BN-ReLU-Linear(512, d)
loss ......................................... D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2, D(p, z) = -cos(p, z)

Each view goes through the encoder separately, as in the official code, so BatchNorm
statistics are per view. The predictor's learning rate is kept constant when
``fix_pred_lr`` (official ``--fix-pred-lr``, used for the paper's ImageNet results): the
predictor comes back from ``parameter_groups()`` as a ``fix_lr=True`` group and the common
training loop skips the schedule for such groups.

Multi-process runs normalise over the global batch: the SimSiam recipes set ``sync_bn=True``
(the official script converts the whole model to SyncBatchNorm); see ``ssl_zoo.batchnorm``.

The official projector keeps a bias on its last Linear but freezes it because the
following BN (affine=False) subtracts it anyway; we build that Linear without bias, which
computes the same function with one fewer dead parameter.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..heads import mlp
from ..losses import negative_cosine
from .base import SSLMethod


def simsiam_projector(in_dim: int, out_dim: int = 2048, hidden_dim: int | None = None,
                      num_layers: int = 3) -> nn.Sequential:
    """``num_layers`` Linear layers (no bias), BN after each, ReLU between, the last BN affine-free.

    3 layers (ImageNet): Linear(in, hid)-BN-ReLU-Linear(hid, hid)-BN-ReLU-Linear(hid, out)-BN.
    2 layers (CIFAR, Appendix D): Linear(in, hid)-BN-ReLU-Linear(hid, out)-BN.
    ``hidden_dim`` defaults to ``in_dim`` (official code: prev_dim, the encoder width).
    """
    if num_layers < 1:
        raise ValueError(f"proj_layers must be >= 1, got {num_layers}.")
    hid = hidden_dim or in_dim
    return mlp([in_dim, *([hid] * (num_layers - 1)), out_dim], batch_norm=True, last_bn=True,
               last_bn_affine=False)


def simsiam_predictor(dim: int = 2048, hidden_dim: int = 512) -> nn.Sequential:
    """Bottleneck Linear(dim, hidden, no bias)-BN-ReLU-Linear(hidden, dim)."""
    return mlp([dim, hidden_dim, dim], batch_norm=True)


class SimSiam(SSLMethod):
    """SimSiam: predictor + stop-gradient, no negatives (module docstring)."""

    view_names = ("crop", "crop")

    def __init__(self, encoder: nn.Module, *, image_size: int = 224, proj_dim: int = 2048,
                 proj_hidden_dim: int | None = None, proj_layers: int = 3, pred_hidden_dim: int = 512,
                 fix_pred_lr: bool = True) -> None:
        super().__init__(encoder)
        self.image_size = image_size
        # Official: the projector's hidden width is the encoder's feature width (prev_dim).
        self.projector = simsiam_projector(self.num_features, proj_dim, proj_hidden_dim, proj_layers)
        self.predictor = simsiam_predictor(proj_dim, pred_hidden_dim)
        self.fix_pred_lr = fix_pred_lr

    def project(self, h: Tensor) -> Tensor:
        """Projector output z for pooled encoder features h (the stop-gradient target)."""
        return self.projector(h)

    def predict(self, z: Tensor) -> Tensor:
        """Predictor output p for projections z."""
        return self.predictor(z)

    # -- what synth uses (ssl_zoo.methods.base.SynthBase) ------------------------
    def pair_head(self, h: Tensor) -> Tensor:
        """The online head for synth's L_pair: the projector."""
        return self.project(h)

    @torch.no_grad()
    def gradcam_target(self, views: Sequence[Tensor]) -> Tensor:
        """sg(z) of the first view (its own encoder pass: the base's z1 carries a graph)."""
        return self.project(self.encoder(views[0]))

    def positive_pair_loss(self, h: Tensor, target: Tensor) -> Tensor:
        """L_gc: -cos(pred(proj(h)), sg(z)), the SimSiam loss of the positive pair."""
        return negative_cosine(self.predict(self.project(h)), target)

    def forward(self, views: Sequence[Tensor], gradcam_target: Tensor | None = None) -> dict[str, Tensor]:
        """``gradcam_target`` is accepted for synth's interface and not needed here."""
        self.check_views(views)
        x1, x2 = views
        z1, z2 = self.project(self.encoder(x1)), self.project(self.encoder(x2))
        p1, p2 = self.predict(z1), self.predict(z2)
        # negative_cosine detaches its target: the stop-gradient of the paper.
        loss_12 = negative_cosine(p1.float(), z2.float())
        loss_21 = negative_cosine(p2.float(), z1.float())
        loss = 0.5 * (loss_12 + loss_21)
        with torch.no_grad():
            # Collapse monitor from the paper (Fig. 2): per-dimension std of l2-normalised z;
            # about 1/sqrt(d) when healthy, 0 when collapsed.
            z_std = F.normalize(z1.detach().float(), dim=1).std(dim=0).mean()
        return {"loss": loss, "loss_p1_z2": loss_12.detach(), "loss_p2_z1": loss_21.detach(), "z_std": z_std}

    def parameter_groups(self) -> list[dict]:
        online = [p for m in (self.encoder, self.projector) for p in m.parameters() if p.requires_grad]
        pred = [p for p in self.predictor.parameters() if p.requires_grad]
        return [{"name": "encoder_projector", "params": online, "fix_lr": False},
                {"name": "predictor", "params": pred, "fix_lr": self.fix_pred_lr}]
