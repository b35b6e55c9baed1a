"""ssl_zoo.evaluation.baseline: each method's own untrained encoder, with BatchNorm statistics recomputed.

The untrained encoder must be exactly the weights training starts from (same recipe init, same seed), and
recomputing BatchNorm statistics must change nothing but the running statistics, which must then describe
the training images.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import make_digit_folder
from torch import nn

import ssl_zoo.factory
from ssl_zoo.evaluation.baseline import (
    INIT_BN_SUFFIX,
    recompute_batchnorm_stats,
    training_images,
    untrained_encoder,
    untrained_scores,
)
from ssl_zoo.train import resolve_recipe, train

# timm's tiny test_resnet keeps these fast; zero_init_last as the SimSiam recipes set it.
TINY_SIMSIAM = {"arch": "test_resnet", "model_args": {"zero_init_last": True}}
TINY_MOCO = {"arch": "test_resnet", "model_args": {"zero_init_last": False}, "queue_size": 64, "bn_group_size": 8}


def _first_bn(module: nn.Module) -> nn.BatchNorm2d:
    return next(m for m in module.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize(("name", "overrides"), [("simsiam_r18_digits", TINY_SIMSIAM),
                                                 ("moco_v2_r18_digits", TINY_MOCO)])
def test_untrained_encoder_is_the_encoder_training_starts_from(name, overrides, tmp_path: Path,
                                                               monkeypatch) -> None:
    """Capture the encoder ssl_zoo.train builds before its first step and compare it with ours, key by key."""
    captured: dict[str, torch.Tensor] = {}
    original = ssl_zoo.factory.create_method

    def capturing_create_method(*args, **kwargs):
        method = original(*args, **kwargs)
        captured.update({k: v.clone() for k, v in method.encoder.state_dict().items()})
        return method

    monkeypatch.setattr(ssl_zoo.factory, "create_method", capturing_create_method)
    folder = make_digit_folder(tmp_path / "digits", per_class=4)
    train(name, data=str(folder), seed=3, max_steps=1, batch_size=16, num_workers=0, progress_bar=False,
          overrides=overrides, output=tmp_path / "run")
    monkeypatch.undo()
    ours = untrained_encoder(resolve_recipe(name, overrides=overrides), seed=3).state_dict()
    assert captured and captured.keys() == ours.keys()
    assert all(torch.equal(captured[k], ours[k]) for k in ours)
    other_seed = untrained_encoder(resolve_recipe(name, overrides=overrides), seed=4).state_dict()
    assert not torch.equal(other_seed["conv1.0.weight"], ours["conv1.0.weight"])


def test_each_recipe_keeps_its_own_initialisation() -> None:
    """SimSiam's recipes zero the last BatchNorm of every residual block (zero_init_last), MoCo v2's do not."""
    simsiam = untrained_encoder(resolve_recipe("simsiam_r18_digits", overrides=TINY_SIMSIAM), seed=1)
    moco = untrained_encoder(resolve_recipe("moco_v2_r18_digits", overrides=TINY_MOCO), seed=1)
    assert torch.count_nonzero(simsiam.layer1[0].bn2.weight) == 0
    assert torch.count_nonzero(moco.layer1[0].bn2.weight) > 0
    assert type(moco.layer1[0].bn2) is nn.BatchNorm2d  # the plain export architecture, not MoCo's grouped BN


def test_recompute_batchnorm_stats_changes_only_the_statistics() -> None:
    recipe = resolve_recipe("simsiam_r18_digits", overrides=TINY_SIMSIAM)
    encoder = untrained_encoder(recipe, seed=1)
    images = training_images(recipe)
    before = copy.deepcopy(encoder.state_dict())
    bn = _first_bn(encoder)
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))  # the initial statistics

    # The first BatchNorm's input over the whole training split, encoded in eval mode (statistics unused).
    inputs: list[torch.Tensor] = []
    handle = bn.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    with torch.no_grad():
        for x, _ in torch.utils.data.DataLoader(images, batch_size=512):
            encoder(x)
    handle.remove()
    x = torch.cat(inputs).transpose(0, 1).flatten(1)  # (C, N * H * W)
    assert encoder.training is False

    assert recompute_batchnorm_stats(encoder, images, batch_size=256, seed=0) is encoder
    assert encoder.training is False  # mode restored
    after = encoder.state_dict()
    stats = {k for k in after if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert all(torch.equal(before[k], after[k]) for k in after if k not in stats)  # no weight moved
    assert all(m.momentum == 0.1 for m in encoder.modules() if isinstance(m, nn.BatchNorm2d))
    # Mean of per-batch means / variances of shuffled batches of 256: the dataset's within a small tolerance.
    torch.testing.assert_close(bn.running_mean, x.mean(1), atol=1e-3 * x.std(1).max().item(), rtol=1e-2)
    torch.testing.assert_close(bn.running_var, x.var(1), rtol=2e-2, atol=1e-6)
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


def test_untrained_scores_reports_both_statistics() -> None:
    recipe = resolve_recipe("moco_v2_r18_digits", overrides=TINY_MOCO)
    calls = []

    def score(encoder: nn.Module) -> dict[str, float]:
        calls.append(encoder)
        return {"var": _first_bn(encoder).running_var.mean().item()}

    out = untrained_scores(recipe, 1, score)
    assert len(calls) == 2 and set(out) == {"var", f"var{INIT_BN_SUFFIX}"}
    assert out[f"var{INIT_BN_SUFFIX}"] == pytest.approx(1.0)  # init statistics: variance 1
    assert out["var"] != pytest.approx(1.0)
