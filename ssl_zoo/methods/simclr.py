"""SimCLR (Chen, Kornblith, Norouzi, Hinton 2020) and LeOCLR on SimCLR (LeOCLR paper Sec. 5, Tab. 4).

encoder f + projection g ........ z = g(f(x)), g = Linear(d, d)-BN-ReLU-Linear(d, 128) (SimCLR: 2-layer MLP)
SimCLR loss ..................... NT-Xent over the 2N views of the global batch: (z1_i, z2_i) are
                                  positives, the other 2N - 2 views negatives, temperature tau
LeOCLR on SimCLR ................ views (original, crop, crop); u = g(f(original)), v_k = g(f(crop_k)),
                                  L = NT-Xent(u, v1) + NT-Xent(u, v2): each crop is pulled toward the
                                  uncropped original and never toward the other crop (Sec. 3, Eq. 3), and
                                  both branches are trained by back-propagation ("an end-to-end framework,
                                  where the two encoders f_q and f_k are updated via backpropagation", Sec. 5)

Under several processes the projections are all-gathered with their graph, so the negatives are the
global batch as in SimCLR; every process computes the same loss (``all_gather_with_grad``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..distributed import all_gather_with_grad
from ..heads import mlp
from ..losses import nt_xent
from .base import SSLMethod


def simclr_projector(in_dim: int, hidden_dim: int | None = None, out_dim: int = 128) -> nn.Sequential:
    """Linear(d, hidden)-BN-ReLU-Linear(hidden, out): SimCLR's projection head with BN (SimCLR v2 style)."""
    return mlp([in_dim, hidden_dim or in_dim, out_dim], batch_norm=True)


def global_nt_xent(z_a: Tensor, z_b: Tensor, temperature: float) -> Tensor:
    """NT-Xent with the whole global batch as negatives (identical on every process)."""
    return nt_xent(all_gather_with_grad(z_a.float()), all_gather_with_grad(z_b.float()), temperature)


class SimCLR(SSLMethod):
    """SimCLR: NT-Xent over the global batch of two crops (module docstring)."""

    view_names = ("crop", "crop")

    def __init__(self, encoder: nn.Module, *, image_size: int = 224, proj_hidden_dim: int | None = None,
                 proj_dim: int = 128, temperature: float = 0.1) -> None:
        super().__init__(encoder)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.projector = simclr_projector(self.num_features, proj_hidden_dim, proj_dim)
        self.temperature = float(temperature)

    def project(self, x: Tensor) -> Tensor:
        return self.projector(self.encoder(x))

    def forward(self, views: Sequence[Tensor]) -> dict[str, Tensor]:
        self.check_views(views)
        z1, z2 = (self.project(v) for v in views)
        loss = global_nt_xent(z1, z2, self.temperature)
        with torch.no_grad():
            pos = nn.functional.cosine_similarity(z1.float(), z2.float()).mean()
        return {"loss": loss, "pos_sim": pos}


class LeOCLRSimCLR(SimCLR):
    """LeOCLR's original-image anchor in SimCLR's end-to-end framework (LeOCLR paper Sec. 5, Tab. 4)."""

    view_names = ("original", "crop", "crop")

    def forward(self, views: Sequence[Tensor]) -> dict[str, Tensor]:
        self.check_views(views)
        u, v1, v2 = (self.project(v) for v in views)
        loss_1 = global_nt_xent(u, v1, self.temperature)
        loss_2 = global_nt_xent(u, v2, self.temperature)
        return {"loss": loss_1 + loss_2, "loss_orig_crop1": loss_1.detach(), "loss_orig_crop2": loss_2.detach()}
