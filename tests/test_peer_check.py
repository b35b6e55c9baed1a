"""benchmarks/peer_check.py: MoCo v2 / SimSiam rebuilt from lightly's parts, 2-step smoke runs at toy scale."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from conftest import load_benchmark

from ssl_zoo.train import resolve_recipe

pytest.importorskip("lightly")  # the `peer` extra (also in `test`)

TINY = {"simsiam_r18_digits": {"arch": "test_resnet", "model_args": {"zero_init_last": True}},
        "moco_v2_r18_digits": {"arch": "test_resnet", "model_args": {}, "queue_size": 64, "bn_group_size": 8}}


@pytest.fixture(scope="module")
def peer():
    return load_benchmark("peer_check")


@pytest.mark.parametrize("name", sorted(TINY))
def test_two_steps_train_from_our_start_and_return_a_plain_timm_encoder(peer, name) -> None:
    recipe = resolve_recipe(name, batch_size=16, overrides=TINY[name])
    start = timm.create_model("test_resnet", num_classes=0, **TINY[name]["model_args"])
    encoder, info = peer.train_peer(recipe, seed=0, num_workers=0, max_steps=2)
    assert info["steps"] == 2 and info["same_start_as_ssl_zoo"] is True
    assert info["lr"] == pytest.approx(recipe.train.base_lr * 16 / recipe.train.lr_batch_denom)
    # the plain architecture ssl_zoo evaluates (MoCo's split BatchNorm collated back), with trained weights
    assert start.state_dict().keys() == encoder.state_dict().keys()
    initial = peer.plain_encoder(peer.build_peer(recipe, 0).backbone, recipe).state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in encoder.state_dict().items() if k.endswith("weight"))
    assert all(torch.isfinite(v).all() for v in encoder.state_dict().values() if v.is_floating_point())


def test_moco_uses_lightlys_split_batchnorm_queue_and_momentum_copy(peer) -> None:
    from lightly.models.batchnorm import SplitBatchNorm

    recipe = resolve_recipe("moco_v2_r18_digits", batch_size=16, overrides=TINY["moco_v2_r18_digits"])
    model = peer.build_peer(recipe, 0)
    splits = {m.num_splits for m in model.backbone.modules() if isinstance(m, SplitBatchNorm)}
    assert splits == {2}  # batch 16 in BatchNorm groups of 8
    assert model.criterion.memory_bank.size == (64, 128) and model.criterion.temperature == 0.2
    assert not any(p.requires_grad for p in model.backbone_momentum.parameters())


def test_simsiam_keeps_the_predictor_lr_fixed_and_exempts_norm_and_bias(peer) -> None:
    recipe = resolve_recipe("simsiam_r18_digits", overrides=TINY["simsiam_r18_digits"])
    model = peer.build_peer(recipe, 0)
    optimizer, scheduler = peer.build_optimizer(model, recipe, lr=0.1, total_steps=10, warmup_steps=2)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["prediction.decay"] == pytest.approx(0.1) and lrs["backbone_projection.decay"] < 0.1
    decays = {g["name"]: g["weight_decay"] for g in optimizer.param_groups}
    assert decays["backbone_projection.no_decay"] == 0.0 and decays["backbone_projection.decay"] == 5e-4


def test_refuses_what_it_does_not_rebuild(peer) -> None:
    with pytest.raises(peer.PeerCheckError, match="leoclr"):
        peer.check_recipe(resolve_recipe("leoclr_r18_digits"))


def test_command_line_writes_machine_readable_json(peer, tmp_path: Path) -> None:
    out = tmp_path / "peer.json"
    assert peer.main(["simsiam_r18_digits", "--max-steps", "2", "--batch-size", "16", "--num-workers", "0",
                      "--no-linear", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["peer_library"] == "lightly" and result["run"]["steps"] == 2
    assert result["recipe"] == "simsiam_r18_digits" and result["seed"] == 0
    assert 0.0 < result["peer"]["knn20_top1"] <= 1.0 and result["peer"]["n_test"] > 0
    assert result["command"].startswith("python benchmarks/peer_check.py simsiam_r18_digits")
