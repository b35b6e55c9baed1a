"""The interface between a self-supervised method and the training loop.

The loop (``ssl_zoo.train``) knows nothing else about a method: it builds the
views named in ``view_names``, calls ``forward(views)``, back-propagates
``out["loss"]``, steps the optimiser and calls ``after_optimizer_step``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class SSLMethod(nn.Module):
    #: Views the data pipeline must produce per image, in order (see ssl_zoo.transforms).
    view_names: tuple[str, ...] = ("crop", "crop")

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        if not hasattr(encoder, "num_features"):
            raise TypeError("The encoder must expose `num_features` (a timm model built with num_classes=0).")
        self.encoder = encoder

    @property
    def num_features(self) -> int:
        return int(self.encoder.num_features)

    def forward(self, views: Sequence[Tensor]) -> dict[str, Tensor]:  # pragma: no cover - interface
        """Return a dict with a scalar ``"loss"`` plus named scalar parts to log."""
        raise NotImplementedError

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        """Hook run after each optimiser step; ``progress`` is the share of training done."""

    def parameter_groups(self) -> list[dict]:
        """Parameter groups for the optimiser; ``fix_lr`` groups skip the lr schedule."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"name": "all", "params": params, "fix_lr": False}]

    def check_views(self, views: Sequence[Tensor]) -> None:
        if len(views) != len(self.view_names):
            raise ValueError(f"{type(self).__name__} expects {len(self.view_names)} views "
                             f"{self.view_names}, got {len(views)}.")
