"""Synthesized-pair learning for self-supervised fine-grained recognition ("synth").

An add-on that wraps a base method (MoCo v2, LeOCLR or SimSiam; any registered method that declares
``ssl_zoo.methods.base.SynthBase``: pair_head, gradcam_target, positive_pair_loss) and adds, per step
(step numbers are those of the "synth" section of ../shared/METHODS.md):

1. reconstruction ........ h = f(x) on the plain view x, x_rec = D(h), L_rec = MSE(x_rec, x)
2. Grad-CAM vector ....... grad = dL_gc/dh for the base contrastive loss of (h, augmented view),
                           c = ReLU(-h * grad), c_hat = minmax(c) per sample,
                           eps_gc ~ N(0, (sigma_gc (1 - c_hat))^2)
3. low-variance dims ..... FIFO bank of the last N vectors h, v = per-dim variance,
                           v_bar = v / ||v||, mask = v_bar < delta, v_hat = minmax(v_bar),
                           eps_var ~ N(0, (sigma_var (1 - v_hat))^2) on masked dims, 0 elsewhere
4. synthesized pair ...... h_tilde = h + eps_gc + eps_var, x_hat = D(h), x_tilde = D(h_tilde) (both
                           detached), L_pair = NT-Xent over the 2B generated images of the GLOBAL
                           batch (all processes) encoded by the online encoder + head
5. total ................. L = L_base + alpha L_rec + beta L_pair

Choices the paper leaves open (documented in docs/synth.md):
- D's output lives in the *normalised* image space (the plain view is resized and normalised
  with the recipe's mean/std), so L_rec compares normalised tensors; un-normalise to look at it.
- D uses GroupNorm, not BatchNorm: a generated image must not depend on the others in its batch
  and D has no running statistics to keep consistent across processes.
- The bank is filled with the *global* batch (all-gathered) before the variance is taken, so every
  process computes the same mask, and the current batch already counts at the first step.
- Grad-CAM is computed on a detached copy of h with ``torch.autograd.grad(..., inputs=h)``: no graph
  is kept and no parameter's ``.grad`` is touched (DDP's gradient hooks never fire for it). For
  MoCo it is computed before the base forward, so it sees the same queue as the base loss, and the
  base's forward reuses the same momentum key (one key-encoder pass, not two).
- The "random" ablation adds isotropic N(0, sigma_gc^2) noise to every dimension.
- L_pair's negatives are the generated images of the whole global batch: the projections are
  all-gathered with their graph (``all_gather_with_grad``, as SimCLR's NT-Xent here), so N processes
  x B images train as one process x N B (2 N B - 2 negatives per sample, not 2 B - 2).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import all_gather_with_grad
from ..losses import nt_xent
from . import get_method_class
from .base import SSLMethod, SynthBase
from .decoder import DEFAULT_DECODER_CHANNELS, FeatureDecoder, load_decoder_weights_
from .moco import fifo_write_

if TYPE_CHECKING:
    from ..recipe import Recipe

VARIANTS = ("full", "gradcam", "lowvar", "random")


# -- the pure pieces of steps 2-4 (tested one by one) ------------------------------------------

def minmax(x: Tensor, dim: int = -1) -> Tensor:
    """Scale to [0, 1] along ``dim``; a constant input maps to 0."""
    lo = x.amin(dim, keepdim=True)
    hi = x.amax(dim, keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def gradcam_vector(h: Tensor, grad: Tensor) -> Tensor:
    """Step 2: c = ReLU(-h * dL/dh), min-max normalised per sample (row)."""
    return minmax(F.relu(-h * grad), dim=1)


def low_variance(bank: Tensor, delta: float) -> tuple[Tensor, Tensor, Tensor]:
    """Step 3: (v_bar, mask, v_hat) from the bank's per-dimension variance.

    v = Var over the bank rows; v_bar = v / ||v||_2; mask = v_bar < delta; v_hat = minmax(v_bar).
    """
    v = bank.float().var(dim=0, unbiased=False)
    v_bar = v / v.norm().clamp_min(1e-12)
    return v_bar, v_bar < delta, minmax(v_bar, dim=0)


def noise_stds(variant: str, batch: int, dim: int, *, c_hat: Tensor | None, v_hat: Tensor, mask: Tensor,
               sigma_gc: float, sigma_var: float) -> tuple[Tensor, Tensor]:
    """Per-element standard deviations (std_gc, std_var), both (B, d), of the two noise terms.

    std_gc = sigma_gc (1 - c_hat) ("full", "gradcam"), std_var = sigma_var (1 - v_hat) on the
    low-variance dims ("full", "lowvar"); "random" puts sigma_gc on every element of std_gc.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown synth variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
    zeros = torch.zeros(batch, dim, device=v_hat.device)
    std_gc, std_var = zeros, zeros
    if variant in ("full", "gradcam"):
        if c_hat is None:
            raise ValueError(f"Variant {variant!r} needs the Grad-CAM vector c_hat.")
        std_gc = sigma_gc * (1.0 - c_hat.float())
    if variant in ("full", "lowvar"):
        std_var = (sigma_var * (1.0 - v_hat) * mask.float()).expand(batch, dim)
    if variant == "random":
        std_gc = torch.full((batch, dim), float(sigma_gc), device=v_hat.device)
    return std_gc, std_var


def perturb(h: Tensor, std_gc: Tensor, std_var: Tensor) -> Tensor:
    """Step 4: h_tilde = h + eps_gc + eps_var with eps ~ N(0, std^2), independent per element."""
    return h + std_gc * torch.randn_like(std_gc) + std_var * torch.randn_like(std_var)


# -- the add-on -------------------------------------------------------------------------------

class SynthPairs(SSLMethod):
    """A base SSL method plus a decoder, synthesized pairs and the two noise criteria.

    Views: ``("plain",) + base.view_names``; the plain view (resize + normalise) is the
    reconstruction target and the source of h. The encoder is registered once (inside the
    base), so ``state_dict()`` has no aliased tensors; ``self.encoder`` is the base's.
    """

    bank: Tensor
    bank_ptr: Tensor
    bank_count: Tensor

    def __init__(self, encoder: nn.Module, *, image_size: int = 224, base: str = "moco_v2",
                 base_args: dict | None = None, variant: str = "full", alpha: float = 0.5, beta: float = 0.5,
                 delta: float = 0.02, sigma_gc: float = 0.5, sigma_var: float = 0.5, bank_size: int = 4096,
                 nt_xent_temperature: float = 0.2,
                 decoder_channels: tuple[int, ...] = DEFAULT_DECODER_CHANNELS,
                 decoder_weights: str | None = None, decoder_pretrain_epochs: int = 200) -> None:
        nn.Module.__init__(self)  # not SSLMethod.__init__: the encoder lives in self.base only
        if variant not in VARIANTS:
            raise ValueError(f"Unknown synth variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
        if base == "synth":
            raise ValueError("synth cannot wrap itself; use base='moco_v2' or base='simsiam'.")
        if bank_size < 2:
            raise ValueError(f"bank_size must be at least 2 to estimate a variance, got {bank_size}.")
        if decoder_pretrain_epochs < 0:
            raise ValueError(f"decoder_pretrain_epochs must be >= 0, got {decoder_pretrain_epochs}.")
        # Read by prepare_run (the training loop's decoder stage), kept here so it is a method argument.
        self.decoder_pretrain_epochs = int(decoder_pretrain_epochs)
        self.base = get_method_class(base)(encoder, image_size=image_size, **dict(base_args or {}))
        if not isinstance(self.base, SynthBase):
            raise ValueError(f"synth wraps bases that declare pair_head, gradcam_target and positive_pair_loss "
                             f"(ssl_zoo.methods.base.SynthBase: moco_v2, leoclr, simsiam); {base!r} does not.")
        self.view_names = ("plain",) + tuple(self.base.view_names)
        self.variant = variant
        self.alpha, self.beta, self.delta = float(alpha), float(beta), float(delta)
        self.sigma_gc, self.sigma_var = float(sigma_gc), float(sigma_var)
        self.nt_xent_temperature = float(nt_xent_temperature)
        dim = self.num_features
        self.decoder = FeatureDecoder(dim, image_size, decoder_channels)
        if decoder_weights:
            load_decoder_weights_(self.decoder, decoder_weights)
        self.register_buffer("bank", torch.zeros(bank_size, dim))
        self.register_buffer("bank_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("bank_count", torch.zeros((), dtype=torch.long))

    @property
    def encoder(self) -> nn.Module:  # type: ignore[override]
        return self.base.encoder

    @classmethod
    def prepare_run(cls, recipe: Recipe, run_dir: Path, *, resume: bool = False, custom_dataset: bool = False,
                    **train_kwargs: Any) -> tuple[Recipe, dict[str, Any] | None]:
        """Paper Appendix B.2: pre-train the decoder (encoder frozen) before training, unless given.

        The stage trains into ``run_dir/decoder_pretrain`` for ``decoder_pretrain_epochs`` epochs and
        the run then loads its ``decoder.safetensors``; ``resume`` continues (or skips) it. An explicit
        ``decoder_weights`` skips the stage; ``decoder_pretrain_epochs=0`` starts from an untrained
        decoder, which is only done when asked like that.
        """
        args = recipe.method_args
        if args.get("decoder_weights"):
            return recipe, None
        epochs = int(args.get("decoder_pretrain_epochs", 200))
        if epochs == 0:
            warnings.warn(f"{recipe.name}: decoder_pretrain_epochs=0, so the synthesized pairs come from an untrained "
                          f"decoder (the paper pre-trains it for 200 epochs).", RuntimeWarning, stacklevel=2)
            return recipe, None
        if custom_dataset:
            raise ValueError("A synth run on a dataset object cannot pre-train its decoder itself: pass "
                             "decoder_weights=... (from `ssl-zoo pretrain-decoder`) or decoder_pretrain_epochs=0.")
        from ..decoder_pretrain import run_decoder_stage

        decoder_file, interrupted = run_decoder_stage(recipe, run_dir, epochs=epochs, resume=resume, **train_kwargs)
        if decoder_file is None:
            return recipe, interrupted
        return recipe.with_overrides(decoder_weights=str(decoder_file)), None

    def pair_head(self, h: Tensor) -> Tensor:
        """The online head used for L_pair (the base's ``pair_head``: MoCo's g, SimSiam's projector)."""
        return self.base.pair_head(h)

    # -- step 2 ---------------------------------------------------------------------------------
    def compute_gradcam(self, h: Tensor, base_views: Sequence[Tensor], target: Tensor | None = None) -> Tensor:
        """c_hat (B, d): dL_gc/dh on a detached copy of h, no graph kept, no parameter grads.

        L_gc is the base's loss of the positive pair (h, ``target``); ``target`` defaults to the base's
        ``gradcam_target(base_views)`` (MoCo: the momentum key of the last view, queue as negatives).
        """
        if target is None:
            target = self.base.gradcam_target(base_views)
        h_leaf = h.detach().float().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.base.positive_pair_loss(h_leaf, target), h_leaf)
        return gradcam_vector(h_leaf.detach(), grad)

    # -- step 3 ---------------------------------------------------------------------------------
    @torch.no_grad()
    def update_bank(self, h: Tensor) -> None:
        """Replace the oldest rows with the global batch (all processes; wraps around)."""
        written = fifo_write_(self.bank, self.bank_ptr, h)
        self.bank_count.copy_(torch.clamp(self.bank_count + written, max=self.bank.shape[0]))

    def filled_bank(self) -> Tensor:
        return self.bank[: int(self.bank_count)]

    # -- steps 1-5 ------------------------------------------------------------------------------
    def compute_losses(self, views: Sequence[Tensor]) -> dict[str, Tensor]:
        """All parts with their graphs (tests back-propagate them one by one); see forward."""
        self.check_views(views)
        x, base_views = views[0], list(views[1:])
        # Step 1: reconstruction of the plain view; L_rec trains D and flows into the encoder.
        h = self.encoder(x)
        x_rec = self.decoder(h)
        loss_rec = F.mse_loss(x_rec.float(), x.float())
        # Step 2: Grad-CAM score vector (before the base forward: same queue as the base loss). The base
        # reuses the pair's target (MoCo: the key of the last view), so no extra momentum-encoder pass.
        if self.variant in ("full", "gradcam"):
            target = self.base.gradcam_target(base_views)
            c_hat = self.compute_gradcam(h, base_views, target)
            base_out = self.base(base_views, gradcam_target=target)
        else:
            c_hat, base_out = None, self.base(base_views)
        # Step 3: FIFO bank (global batch in, then variance), threshold delta on v_bar.
        self.update_bank(h)
        v_bar, mask, v_hat = low_variance(self.filled_bank(), self.delta)
        # Step 4: the two noise terms, the perturbed vector and the generated pair (data: no grad).
        std_gc, std_var = noise_stds(self.variant, h.shape[0], h.shape[1], c_hat=c_hat, v_hat=v_hat, mask=mask,
                                     sigma_gc=self.sigma_gc, sigma_var=self.sigma_var)
        with torch.no_grad():
            h_tilde = perturb(h.detach().float(), std_gc, std_var)
            x_hat = x_rec.detach()  # = D(h); D is batch-independent (GroupNorm), so no second pass
            x_tilde = self.decoder(h_tilde.to(x_rec.dtype))
        z = self.pair_head(self.encoder(torch.cat([x_hat, x_tilde])))
        z_hat, z_tilde = z.float().chunk(2)
        # The global batch's pairs (every process computes the same loss; all_gather's backward sums the
        # processes' identical gradients and DDP's average divides them again: the one-process gradient).
        loss_pair = nt_xent(all_gather_with_grad(z_hat), all_gather_with_grad(z_tilde), self.nt_xent_temperature)
        with torch.no_grad():
            total_std = (std_gc ** 2 + std_var ** 2).sqrt().mean()
        return {"loss_base": base_out["loss"], "loss_rec": loss_rec, "loss_pair": loss_pair,
                "lowvar_share": mask.float().mean(), "noise_std": total_std,
                "base_parts": {k: v for k, v in base_out.items() if k != "loss"},
                "x_rec": x_rec, "x_tilde": x_tilde}

    def forward(self, views: Sequence[Tensor]) -> dict[str, Tensor]:
        parts = self.compute_losses(views)
        # Step 5: L = L_base + alpha L_rec + beta L_pair.
        loss = parts["loss_base"] + self.alpha * parts["loss_rec"] + self.beta * parts["loss_pair"]
        out = {"loss": loss}
        for key in ("loss_base", "loss_rec", "loss_pair", "lowvar_share", "noise_std"):
            out[key] = parts[key].detach()
        for key, value in parts["base_parts"].items():
            out.setdefault(key, value.detach() if torch.is_tensor(value) else value)
        return out

    def dataset_warnings(self, num_images: int) -> list[str]:
        return self.base.dataset_warnings(num_images)

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        self.base.after_optimizer_step(progress)  # MoCo's momentum update; nothing for SimSiam

    def parameter_groups(self) -> list[dict]:
        decoder = [p for p in self.decoder.parameters() if p.requires_grad]
        return [*self.base.parameter_groups(), {"name": "decoder", "params": decoder, "fix_lr": False}]

    @torch.no_grad()
    def generate_pair(self, x: Tensor, base_views: Sequence[Tensor] | None = None) -> dict[str, Tensor]:
        """(x_hat, x_tilde, c_hat, mask) for pictures, without touching the bank or the queue.

        Uses the current bank for the low-variance mask (fill it by training first). Grad-CAM
        needs ``base_views`` (the augmented views); without them the Grad-CAM term is left out.
        """
        h = self.encoder(x).float()
        c_hat = None
        if base_views is not None and self.variant in ("full", "gradcam"):
            c_hat = self.compute_gradcam(h, base_views)
        bank = self.filled_bank() if int(self.bank_count) >= 2 else h
        _, mask, v_hat = low_variance(bank, self.delta)
        variant = self.variant if c_hat is not None or self.variant in ("lowvar", "random") else "lowvar"
        std_gc, std_var = noise_stds(variant, h.shape[0], h.shape[1], c_hat=c_hat, v_hat=v_hat, mask=mask,
                                     sigma_gc=self.sigma_gc, sigma_var=self.sigma_var)
        h_tilde = perturb(h, std_gc, std_var)
        return {"x_hat": self.decoder(h), "x_tilde": self.decoder(h_tilde), "mask": mask,
                "c_hat": c_hat if c_hat is not None else torch.zeros_like(h)}
