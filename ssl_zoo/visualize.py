"""``ssl-zoo visualize``: pictures of what a model does (the synth paper's Fig. 3 and 4).

One row per image: the original (only resized), and for a synth run its reconstruction D(h) and
perturbed reconstruction D(h_tilde), then a spatial Grad-CAM map of the encoder overlaid on the
image. Grad-CAM (Selvaraju et al. 2017) is taken on the last conv stage (timm ``forward_intermediates``;
the deepest stage with at least 4x4 cells when the last is smaller, e.g. 32 px inputs) and driven by a
contrastive loss between two views: the plain image (query) against an augmented view of it (key),
InfoNCE over the shown images with temperature 0.2. Channel weights are the
spatial mean of -dL/dA (the direction that *lowers* the loss), cam = ReLU(sum_c w_c A_c).

``RUN_OR_MODEL`` is a training run folder (``checkpoint.pt``: a synth run or its decoder
pre-training, or any method's run for Grad-CAM only) or an exported encoder folder
(``model.safetensors`` + ``config.json``: Grad-CAM only).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor, nn

from .export import WEIGHTS_NAME
from .parsers.visualize import configure_parser
from .recipe import Recipe, get_recipe

CELL = 112  # pixels per picture in the grid (small images are enlarged for visibility)


# -- Grad-CAM ----------------------------------------------------------------------------------

def spatial_gradcam(encoder: nn.Module, query: Tensor, key: Tensor, temperature: float = 0.2,
                    min_cells: int = 4) -> Tensor:
    """(B, H, W) Grad-CAM maps in [0, 1] at the input resolution for the images ``query``.

    L = InfoNCE(normalize(f(query)), sg(normalize(f(key)))) with the other images of the batch as
    negatives; A = the last conv stage's feature map of ``query`` (timm ``forward_intermediates``),
    or, when that map is smaller than ``min_cells`` x ``min_cells`` (a ResNet at 32 px ends at 1x1,
    where a spatial map says nothing), the deepest stage that is not; w_c = mean_xy(-dL/dA_c);
    cam = ReLU(sum_c w_c A_c).
    """
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            k = F.normalize(encoder(key).float(), dim=1)
        with torch.enable_grad():
            final, stages = encoder.forward_intermediates(query)
            big = [t for t in stages if min(t.shape[-2:]) >= min_cells]
            fmap = big[-1] if big else stages[0]
            q = F.normalize(encoder.forward_head(final, pre_logits=True).float(), dim=1)
            logits = q @ k.t() / temperature
            loss = F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device))
            (grad,) = torch.autograd.grad(loss, fmap)
        weights = (-grad).mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * fmap.detach()).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=query.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        lo = cam.flatten(1).amin(1).view(-1, 1, 1)
        hi = cam.flatten(1).amax(1).view(-1, 1, 1)
        return (cam - lo) / (hi - lo).clamp_min(1e-12)
    finally:
        encoder.train(was_training)


def jet(values: np.ndarray) -> np.ndarray:
    """The 'jet' colormap for values in [0, 1]: (..., 3) uint8 (blue - cyan - yellow - red)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.concatenate([r, g, b], axis=-1) * 255).astype(np.uint8)


def to_pil(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> Image.Image:
    """A normalised (3, H, W) tensor back to an RGB image (clipped to [0, 1])."""
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    arr = (image.detach().float().cpu() * s + m).clamp(0, 1).permute(1, 2, 0).numpy()
    return Image.fromarray((arr * 255).round().astype(np.uint8))


def overlay(image: Image.Image, cam: Tensor, alpha: float = 0.5) -> Image.Image:
    heat = Image.fromarray(jet(cam.detach().cpu().numpy())).resize(image.size, Image.BILINEAR)
    return Image.blend(image.convert("RGB"), heat, alpha)


def make_grid(rows: list[list[Image.Image]], titles: Sequence[str], cell: int = CELL) -> Image.Image:
    """Rows of pictures under a title row; every picture enlarged to ``cell`` x ``cell``."""
    header = 18
    grid = Image.new("RGB", (cell * len(titles), header + cell * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for j, title in enumerate(titles):
        draw.text((j * cell + 4, 3), title, fill="black")
    for i, row in enumerate(rows):
        for j, picture in enumerate(row):
            resample = Image.NEAREST if picture.size[0] * 2 <= cell else Image.BILINEAR
            grid.paste(picture.resize((cell, cell), resample), (j * cell, header + i * cell))
    return grid


# -- loading -------------------------------------------------------------------------------------

def load_for_pictures(path: str | Path, recipe: str | Recipe | None = None) -> tuple[Recipe, nn.Module, Any]:
    """(recipe, encoder, synth method or None) from a run folder or an exported encoder folder."""
    path = Path(path)
    from .checkpoint import CHECKPOINT_NAME, load_checkpoint
    from .weights import build_model, local_source, recipe_source

    run_state = path if path.suffix == ".pt" else path / CHECKPOINT_NAME
    if run_state.is_file():
        ckpt = load_checkpoint(run_state)
        rec = _pick_recipe(recipe, Recipe.from_dict(ckpt["recipe"]))
        rec = rec.with_overrides(backbone={"init": None})  # weights come from the checkpoint, never the network
        if rec.method == "synth":
            return rec, *_synth_for_pictures(run_state, rec, ckpt)
        source = recipe_source(rec)  # the encoder from the training state, read by the one loading path
        source = dataclasses.replace(source, weights=run_state, origin=f"checkpoint {run_state}")
        return rec, build_model(source, state=ckpt["model"]).eval(), None
    if not (path / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{str(path)!r} is neither a run folder (with checkpoint.pt) nor an exported model "
                                f"folder (with model.safetensors + config.json).")
    source = local_source(path)
    return _pick_recipe(recipe, source.recipe), build_model(source).eval(), None


def _synth_for_pictures(run_state: Path, rec: Recipe, ckpt: dict[str, Any]) -> tuple[nn.Module, Any]:
    """The encoder and synth method of a synth run, or of its decoder pre-training (encoder + decoder)."""
    from .factory import create_method
    from .weights import load_state_dict_strict

    method = create_method(rec)
    state = ckpt["model"]
    if any(k.startswith("base.") for k in state):  # a synth training run: everything
        method.load_state_dict(state)
    else:  # a decoder pre-training run: frozen encoder + decoder, the base heads stay random
        load_state_dict_strict(method.encoder, state, source=f"checkpoint {run_state}", prefix="encoder.")
        load_state_dict_strict(method.decoder, state, source=f"checkpoint {run_state}", prefix="decoder.")
    method.eval()
    args = rec.method_args
    if not args.get("decoder_weights") and int(args.get("decoder_pretrain_epochs", 1)) == 0:
        import warnings
        warnings.warn(f"{run_state.parent}: this run's decoder was never pre-trained (decoder_pretrain_epochs=0) and "
                      f"learned only through L_rec in {ckpt.get('step', 0)} step(s): the D(h) columns show "
                      f"an untrained decoder. The paper pre-trains it for 200 epochs.", RuntimeWarning,
                      stacklevel=3)
    return method.encoder, method


def _pick_recipe(given: str | Recipe | None, stored: Recipe | None) -> Recipe:
    if given is not None:
        return given if isinstance(given, Recipe) else get_recipe(given)
    if stored is None:
        raise ValueError("The model folder does not record its recipe; pass --recipe NAME.")
    return stored


# -- the picture ------------------------------------------------------------------------------------

def visualize(path: str | Path, out: str | Path, *, recipe: str | Recipe | None = None, data: str | None = None,
              dataset: str | None = None, split: str = "train", num_images: int = 8, seed: int = 0) -> Path:
    """Write the grid PNG for ``num_images`` images of the recipe's dataset; returns its path."""
    from .data import create_dataset
    from .transforms import build_view_transform

    rec, encoder, method = load_for_pictures(path, recipe)
    aug = rec.augment
    plain, crop = build_view_transform("plain", aug), build_view_transform("crop", aug)
    name = dataset or (("imagefolder" if data is not None else "digits") if rec.dataset == "digits" else rec.dataset)
    images = create_dataset(name, root=data, split=split, transform=None)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(images), generator=gen)[:num_images].tolist()
    torch.manual_seed(seed)
    pils = [images[i][0] for i in idx]
    x = torch.stack([plain(p) for p in pils])
    x_aug = torch.stack([crop(p) for p in pils])
    cams = spatial_gradcam(encoder, x, x_aug)
    titles = ["original"]
    columns: list[list[Image.Image]] = [[to_pil(t, aug.mean, aug.std) for t in x]]
    if method is not None:
        base_views = [torch.stack([build_view_transform(v, aug)(p) for p in pils]) for v in method.base.view_names]
        pair = method.generate_pair(x, base_views)
        titles += ["D(h)", "D(h+noise)"]
        columns.append([to_pil(t, aug.mean, aug.std) for t in pair["x_hat"]])
        columns.append([to_pil(t, aug.mean, aug.std) for t in pair["x_tilde"]])
    titles.append("Grad-CAM")
    columns.append([overlay(img, cam) for img, cam in zip(columns[0], cams)])
    grid = make_grid([list(row) for row in zip(*columns)], titles)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out


def run_cli(args: argparse.Namespace) -> int:
    try:
        out = visualize(args.run, args.out, recipe=args.recipe, data=args.data, dataset=args.dataset,
                        split=args.split, num_images=args.num_images, seed=args.seed)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Wrote {out}")
    return 0


__all__ = ["spatial_gradcam", "jet", "overlay", "make_grid", "load_for_pictures", "visualize", "configure_parser",
           "run_cli"]
