"""ssl-zoo visualize: Grad-CAM maps against an independent computation, and the grid files."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from ssl_zoo.checkpoint import save_checkpoint
from ssl_zoo.export import save_encoder
from ssl_zoo.factory import create_method
from ssl_zoo.recipe import get_recipe
from ssl_zoo.visualize import CELL, jet, spatial_gradcam, visualize

TINY = dict(arch="test_resnet", base_args={"queue_size": 32, "proj_dim": 8, "temperature": 0.2, "momentum": 0.99},
            bank_size=32, decoder_channels=[8, 8, 8, 8, 8])


def test_spatial_gradcam_matches_manual_computation():
    enc = timm.create_model("test_resnet", num_classes=0).eval()
    q, k = torch.randn(3, 3, 128, 128), torch.randn(3, 3, 128, 128)
    got = spatial_gradcam(enc, q, k)
    # independent: last stage via forward_features (4x4 at 128 px), hook-free autograd
    fmap = enc.forward_features(q).detach().requires_grad_(True)
    z = F.normalize(enc.forward_head(fmap, pre_logits=True), dim=1)
    with torch.no_grad():
        kz = F.normalize(enc(k), dim=1)
    F.cross_entropy(z @ kz.t() / 0.2, torch.arange(3)).backward()
    cam = F.relu((-fmap.grad.mean((2, 3), keepdim=True) * fmap.detach()).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(128, 128), mode="bilinear", align_corners=False)[:, 0]
    cam = (cam - cam.amin((1, 2), keepdim=True)) / (cam.amax((1, 2), keepdim=True) - cam.amin((1, 2), keepdim=True))
    torch.testing.assert_close(got, cam, rtol=1e-4, atol=1e-4)
    # at 32 px the last stage is 1x1: the deepest stage with >= 4x4 cells is used, so the map varies
    small = spatial_gradcam(enc, q[:, :, :32, :32], k[:, :, :32, :32])
    assert small.shape == (3, 32, 32) and (small.flatten(1).std(1) > 0).all()


def test_jet_endpoints():
    assert jet(np.array([0.0, 1.0])).tolist() == [[0, 0, 127], [127, 0, 0]]


@pytest.fixture()
def synth_run(tmp_path):
    recipe = get_recipe("moco_v2_synth_r18_digits").with_overrides(**TINY)
    method = create_method(recipe)
    method([torch.randn(8, 3, 32, 32) for _ in method.view_names])  # fills the bank
    save_checkpoint(tmp_path / "run" / "checkpoint.pt", {"model": method.state_dict(), "recipe": recipe.to_dict()})
    save_encoder(method.encoder, tmp_path / "model", recipe)
    return tmp_path


def test_grid_for_a_synth_run_and_for_an_encoder(synth_run):
    out = visualize(synth_run / "run", synth_run / "grid.png", num_images=3)
    grid = Image.open(out)
    assert grid.size == (4 * CELL, 18 + 3 * CELL)  # original | D(h) | D(h+noise) | Grad-CAM
    arr = np.asarray(grid)[18:]
    assert arr[:, CELL:2 * CELL].std() > 0 and arr[:, 3 * CELL:].std() > 0
    enc_only = Image.open(visualize(synth_run / "model", synth_run / "enc.png", num_images=2))
    assert enc_only.size == (2 * CELL, 18 + 2 * CELL)  # original | Grad-CAM
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        visualize(synth_run / "nothing", synth_run / "x.png")


def test_warns_when_the_decoder_was_never_pre_trained(tmp_path):
    recipe = get_recipe("moco_v2_synth_r18_digits").with_overrides(**TINY, decoder_pretrain_epochs=0)
    method = create_method(recipe)
    save_checkpoint(tmp_path / "run" / "checkpoint.pt", {"model": method.state_dict(), "recipe": recipe.to_dict(),
                                                         "step": 0})
    with pytest.warns(RuntimeWarning, match="never pre-trained"):
        visualize(tmp_path / "run", tmp_path / "grid.png", num_images=2)
