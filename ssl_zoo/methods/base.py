"""The interface between a self-supervised method and the training loop.

The loop (``ssl_zoo.train``) knows nothing else about a method: it builds the
views named in ``view_names``, calls ``forward(views)``, back-propagates
``out["loss"]``, steps the optimiser and calls ``after_optimizer_step``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from ..recipe import Recipe


@runtime_checkable
class SynthBase(Protocol):
    """What a base method declares so that the synth add-on can wrap it (MoCo v2, LeOCLR, SimSiam do).

    ``pair_head(h)``: the online head that encodes synth's generated pairs for L_pair.
    ``gradcam_target(views)``: the stop-gradient partner of the positive pair (MoCo: the momentum key of
    the last view; SimSiam: sg(z) of the first). ``positive_pair_loss(h, target)``: the base's loss of
    that pair, differentiated w.r.t. ``h`` for Grad-CAM. ``forward(views, gradcam_target=...)`` may
    reuse the target instead of computing it again. A new base opts in by defining these; synth has no
    type checks.
    """

    encoder: nn.Module
    view_names: tuple[str, ...]

    def pair_head(self, h: Tensor) -> Tensor: ...

    def gradcam_target(self, views: Sequence[Tensor]) -> Tensor: ...

    def positive_pair_loss(self, h: Tensor, target: Tensor) -> Tensor: ...


class SSLMethod(nn.Module):
    """The interface the training loop knows (docs/architecture.md, Methods): views in, named losses out."""

    #: Views the data pipeline must produce per image, in order (see ssl_zoo.transforms).
    view_names: tuple[str, ...] = ("crop", "crop")
    #: The recipe ``create_method`` built it from (a plain attribute: not in the state dict).
    recipe: Recipe | None = None

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        if not hasattr(encoder, "num_features"):
            raise TypeError("The encoder must expose `num_features` (a timm model built with num_classes=0).")
        self.encoder = encoder

    @classmethod
    def prepare_run(cls, recipe: Recipe, run_dir: Path, *, resume: bool = False, custom_dataset: bool = False,
                    **train_kwargs: Any) -> tuple[Recipe, dict[str, Any] | None]:
        """Stages to run before training ``recipe`` into ``run_dir`` (default: none).

        Returns ``(recipe to train, None)``, or ``(recipe, result)`` when a stage was interrupted
        (``result["interrupted"]`` is true; its checkpoint lets ``resume=True`` continue it).
        ``train_kwargs`` are the training loop's data/seed/worker/precision options.
        """
        return recipe, None

    def dataset_warnings(self, num_images: int) -> list[str]:
        """Settings of this method that make little sense for a training set of ``num_images`` images."""
        return []

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
