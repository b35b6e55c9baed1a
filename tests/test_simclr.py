"""SimCLR and LeOCLR on SimCLR (LeOCLR Sec. 5): NT-Xent against a hand computation, the attraction pairs, training."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import ssl_zoo
from ssl_zoo.losses import nt_xent
from ssl_zoo.methods import simclr as simclr_module
from ssl_zoo.train import train

TINY = {"arch": "test_resnet", "model_args": {}}


def nt_xent_by_hand(a: torch.Tensor, b: torch.Tensor, t: float) -> float:
    z = F.normalize(torch.cat([a, b]), dim=1)
    n = a.shape[0]
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        num = math.exp(float(z[i] @ z[pos]) / t)
        den = sum(math.exp(float(z[i] @ z[j]) / t) for j in range(2 * n) if j != i)
        total += -math.log(num / den)
    return total / (2 * n)


def test_simclr_loss_is_nt_xent_over_both_views():
    model = ssl_zoo.create_method("simclr_r18_digits", **TINY).eval()
    x1, x2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        z1, z2 = model.project(x1), model.project(x2)
    assert model([x1, x2])["loss"].item() == pytest.approx(nt_xent_by_hand(z1, z2, 0.5), rel=1e-5)
    layers = [type(m).__name__ for m in model.projector]
    assert layers == ["Linear", "BatchNorm1d", "ReLU", "Linear"]  # 2-layer projection head with BN


def test_leoclr_on_simclr_attracts_each_crop_to_the_original_only(monkeypatch):
    model = ssl_zoo.create_method("leoclr_simclr_r18_digits", **TINY).eval()
    assert model.view_names == ("original", "crop", "crop")
    original, crop1, crop2 = (torch.randn(4, 3, 32, 32, requires_grad=True) for _ in range(3))
    pairs = []
    real = simclr_module.global_nt_xent
    monkeypatch.setattr(simclr_module, "global_nt_xent",
                        lambda a, b, t: pairs.append((a.detach().clone(), b.detach().clone())) or real(a, b, t))
    out = model([original, crop1, crop2])
    with torch.no_grad():
        u, v1, v2 = model.project(original), model.project(crop1), model.project(crop2)
    # positives: (original, crop1) and (original, crop2); the two crops are never a positive pair
    assert len(pairs) == 2
    assert torch.allclose(pairs[0][0], u) and torch.allclose(pairs[0][1], v1)
    assert torch.allclose(pairs[1][0], u) and torch.allclose(pairs[1][1], v2)
    expected = nt_xent_by_hand(u, v1, 0.5) + nt_xent_by_hand(u, v2, 0.5)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    # end-to-end (Sec. 5): both branches are trained by back-propagation, no stop-gradient on the crops
    out["loss"].backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in (original, crop1, crop2))


@pytest.mark.parametrize("recipe", ["simclr_r18_digits", "leoclr_simclr_r18_digits"])
def test_trains_through_the_common_loop_with_lars(recipe, tmp_path):
    result = train(recipe, max_steps=2, batch_size=16, num_workers=0, output=tmp_path, progress_bar=False,
                   overrides={**TINY, "optimizer": "lars"})
    assert result["step"] == 2 and (tmp_path / "model.safetensors").is_file()
    assert ssl_zoo.get_recipe("simclr_r50_in1k").train.optimizer == "lars"


GLOBAL_NT_XENT_SCRIPT = """
import sys
import torch
import torch.distributed as dist
from ssl_zoo.methods.simclr import global_nt_xent

dist.init_process_group("gloo")  # from the environment accelerate launch sets (torchrun's)
rank, world = dist.get_rank(), dist.get_world_size()
g = torch.Generator().manual_seed(0)
z_a, z_b = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)  # the global batch, same on both
local_a = z_a[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
local_b = z_b[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
loss = global_nt_xent(local_a, local_b, 0.2)
loss.backward()
torch.save({"loss": loss.detach(), "grad_a": local_a.grad, "grad_b": local_b.grad, "world": world},
           f"{sys.argv[1]}/rank{rank}.pt")
dist.barrier()
dist.destroy_process_group()
"""


def test_global_nt_xent_in_two_processes_is_the_one_process_loss_of_the_global_batch(tmp_path,
                                                                                      launch_two_cpu_processes):
    script = tmp_path / "nt_xent.py"
    script.write_text(GLOBAL_NT_XENT_SCRIPT)
    proc = launch_two_cpu_processes([str(script), str(tmp_path)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    g = torch.Generator().manual_seed(0)
    z_a = torch.randn(8, 16, generator=g).requires_grad_(True)
    z_b = torch.randn(8, 16, generator=g).requires_grad_(True)
    full = nt_xent(z_a, z_b, 0.2)  # one process, the whole global batch
    full.backward()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["world"] == 2
        torch.testing.assert_close(got["loss"], full.detach())  # every process computes the same global loss
        # all_gather's backward sums the gradients of the identical losses over the 2 processes; DDP's
        # average then divides by 2: the local slice of the one-process gradient.
        rows = slice(rank * 4, (rank + 1) * 4)
        torch.testing.assert_close(got["grad_a"] / 2, z_a.grad[rows])
        torch.testing.assert_close(got["grad_b"] / 2, z_b.grad[rows])
