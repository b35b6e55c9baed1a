"""Synth's decoder D and the decoder pre-training method (paper Appendix B.2), below both their users.

``ssl_zoo.methods.synth`` (the add-on) and ``ssl_zoo.decoder_pretrain`` (the ``ssl-zoo pretrain-decoder``
command and the stage ``ssl-zoo train`` runs first) both import from here; neither imports the other's
module for these pieces (imports run one way: command -> methods -> this module).

BatchNorm of the frozen encoder during decoder pre-training (B.2: "This decoder is connected to the
encoder, whose parameters remain fixed during the training phase"; the paper says nothing of BatchNorm).
Decided: the encoder normalises with the statistics of the current batch (training mode), in the same
BatchNorm groups as the synth run (the base's ``bn_group_size``; ``sync_bn`` recipes are converted by the
training loop as in the main stage), and its running statistics are NOT updated. Why: in the main stage
step 1 feeds D with ``h = f(x)`` computed in training mode; pre-training D on running-statistics features
(the previous choice, eval mode) trains it on another feature distribution than the one it decodes later
(for a randomly initialised encoder, whose running statistics are 0 / 1, a very different one). Not
updating the running statistics keeps "fixed" literal: the encoder leaves the stage bit for bit as it
entered it (parameters and buffers), so an exported stage encoder is the initial one.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..batchnorm import convert_split_batchnorm
from .base import SSLMethod

DEFAULT_DECODER_CHANNELS = (512, 256, 128, 64, 32)


class FeatureDecoder(nn.Module):
    """Pooled feature vector (B, d) -> image (B, 3, s, s) in the normalised image space.

    A linear layer to a ``channels[0] x s0 x s0`` map (s0 = s / 2^len(channels), at least 1),
    then one stage per entry of ``channels`` (nearest 2x upsampling, 3x3 conv, GroupNorm, ReLU),
    mirroring the five stride-2 stages of a ResNet, and a 3x3 conv to RGB. When s0 * 2^stages
    differs from ``image_size`` (sizes that are not multiples of 32) the output is resized.
    """

    def __init__(self, in_dim: int, image_size: int, channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
                 out_channels: int = 3) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"decoder_channels must be a non-empty list of positive ints, got {channels!r}.")
        if image_size < 8:
            raise ValueError(f"FeatureDecoder needs image_size >= 8, got {image_size}.")
        self.image_size = int(image_size)
        self.start_size = max(1, round(image_size / 2 ** len(channels)))
        self.fc = nn.Linear(in_dim, channels[0] * self.start_size ** 2)
        stages = []
        for c_in, c_out in zip((channels[0],) + channels[:-1], channels):
            stages += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                       nn.GroupNorm(_groups(c_out), c_out), nn.ReLU(inplace=True)]
        self.stages = nn.Sequential(*stages)
        self.to_image = nn.Conv2d(channels[-1], out_channels, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        x = F.relu(self.fc(h)).view(h.shape[0], -1, self.start_size, self.start_size)
        x = self.to_image(self.stages(x))
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return x


def _groups(channels: int) -> int:
    """The largest of 32, 16, 8, 4, 2, 1 dividing ``channels`` (GroupNorm needs a divisor)."""
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


def load_decoder_weights_(decoder: nn.Module, path: str | Path) -> None:
    """Load a decoder exported by ``ssl-zoo pretrain-decoder`` (``decoder.safetensors``)."""
    from ..errors import UserInputError
    from ..weights import read_state_dict  # the one reader: safetensors, or a weights_only pickle

    path = Path(path)
    if path.is_dir():
        path = path / "decoder.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"Decoder weights {str(path)!r} do not exist. Run `ssl-zoo pretrain-decoder RECIPE "
                                f"--output DIR` first and pass decoder_weights='DIR/decoder.safetensors'.")
    state = read_state_dict(path)
    own = decoder.state_dict()
    bad = [k for k in own if k not in state or state[k].shape != own[k].shape]
    if bad or set(state) - set(own):
        raise UserInputError(f"Decoder weights {str(path)!r} do not fit this decoder (mismatched keys/shapes: "
                         f"{(bad + sorted(set(state) - set(own)))[:5]}). Pre-train the decoder with the same recipe "
                         f"(feature size, image_size and decoder_channels).")
    decoder.load_state_dict(state)


@contextlib.contextmanager
def batch_statistics_only(module: nn.Module) -> Iterator[None]:
    """Inside: every BatchNorm of ``module`` in training mode normalises with its batch's statistics and
    leaves its running statistics (and step count) untouched (``track_running_stats`` off, then restored)."""
    layers = [m for m in module.modules() if isinstance(m, _BatchNorm)]
    saved = [m.track_running_stats for m in layers]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, value in zip(layers, saved):
            m.track_running_stats = value


class DecoderPretraining(SSLMethod):
    """L = MSE(D(f(x)), x) on the plain view, f frozen: no gradient, running statistics unchanged, BatchNorm
    on batch statistics in ``bn_group_size`` groups as in the synth run (module docstring)."""

    view_names = ("plain",)

    def __init__(self, encoder: nn.Module, *, image_size: int,
                 decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS, bn_group_size: int | None = None) -> None:
        super().__init__(encoder)
        # The groups the synth base normalises h in (MoCo v2 / LeOCLR: bn_group_size; SimSiam: None).
        self.encoder = convert_split_batchnorm(self.encoder, bn_group_size)
        # Frozen after the conversion: the split layers' affine parameters are new, and a parameter that asks for a
        # gradient it never gets stops DistributedDataParallel at the second step.
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.decoder = FeatureDecoder(self.num_features, image_size, decoder_channels)

    def encode(self, x: Tensor) -> Tensor:
        """h = f(x) as synth's step 1 computes it (training-mode BatchNorm), without gradient or buffer updates."""
        with torch.no_grad(), batch_statistics_only(self.encoder):
            return self.encoder(x)

    def forward(self, views: Sequence[Tensor]) -> dict[str, Tensor]:
        self.check_views(views)
        (x,) = views
        loss = F.mse_loss(self.decoder(self.encode(x)).float(), x.float())
        return {"loss": loss, "loss_rec": loss.detach()}

    def parameter_groups(self) -> list[dict]:
        return [{"name": "decoder", "params": list(self.decoder.parameters()), "fix_lr": False}]


__all__ = ["DEFAULT_DECODER_CHANNELS", "FeatureDecoder", "load_decoder_weights_", "batch_statistics_only",
           "DecoderPretraining"]
