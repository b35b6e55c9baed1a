"""synth through the real training loop: decoder pre-training stage, encoder init, two processes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ssl_zoo.decoder_pretrain import (DecoderPretraining, build_pretraining_method, export_decoder_from_checkpoint,
                                      pretrain_decoder, pretraining_overrides)
from ssl_zoo.factory import create_backbone, create_method
from ssl_zoo.recipe import get_recipe

TINY = {"arch": "test_resnet", "batch_size": 16, "num_workers": 0}
TINY_BASE = {"queue_size": 64, "proj_dim": 16, "temperature": 0.2, "momentum": 0.99}


def test_pretrain_stage_is_frozen_encoder_adam_and_resumable(tmp_path):
    out = tmp_path / "dec"
    result = pretrain_decoder("moco_v2_synth_r18_digits", output=out, max_steps=2, overrides=dict(TINY),
                              progress_bar=False)
    assert result["step"] == 2 and Path(result["decoder"]).is_file()
    # the encoder did not move (parameters and BatchNorm statistics): compare with its seed-0 initial state
    stage = get_recipe("moco_v2_synth_r18_digits").with_overrides(**TINY)
    torch.manual_seed(0)
    initial = create_backbone(stage).state_dict()
    exported = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(exported[k], initial[k]) for k in initial)
    decoder = load_file(result["decoder"])
    # ... while the decoder did (not equal to a fresh one built with the same seed)
    torch.manual_seed(0)
    fresh = build_pretraining_method(stage.with_overrides(**pretraining_overrides(stage)))
    assert any(not torch.equal(decoder[k], v) for k, v in fresh.decoder.state_dict().items())
    # the synth run loads it
    method = create_method(stage, decoder_weights=result["decoder"])
    assert all(torch.equal(method.decoder.state_dict()[k], v) for k, v in decoder.items())
    # resume (another seed would build another decoder): the checkpoint's decoder comes back
    again = pretrain_decoder("moco_v2_synth_r18_digits", output=out, max_steps=2, overrides=dict(TINY),
                             resume=True, seed=1, progress_bar=False)
    assert all(torch.equal(load_file(again["decoder"])[k], v) for k, v in decoder.items())
    assert torch.equal(load_file(str(export_decoder_from_checkpoint(out, tmp_path / "d2.safetensors")))["fc.weight"],
                       decoder["fc.weight"])


def test_pretraining_method_trains_only_the_decoder():
    m = DecoderPretraining(create_backbone(get_recipe("moco_v2_synth_r18_digits").with_overrides(arch="test_resnet")),
                           image_size=32, decoder_channels=(8, 8, 8, 8, 8)).train()
    assert not m.encoder.training and m.view_names == ("plain",)
    groups = m.parameter_groups()
    assert [g["name"] for g in groups] == ["decoder"]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in m.decoder.parameters()}
    m([torch.randn(4, 3, 32, 32)])["loss"].backward()
    assert all(p.grad is None for p in m.encoder.parameters())
    with pytest.raises(ValueError, match="synth recipe"):
        pretraining_overrides(get_recipe("moco_v2_r18_digits"))


def test_encoder_init_offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    recipe = get_recipe("moco_v2_synth_r50_cub")
    assert recipe.backbone.init == "timm:resnet50.tv_in1k"
    tiny = recipe.with_overrides(arch="test_resnet", init="timm:test_resnet.r160_in1k")
    with pytest.raises(RuntimeError, match="Could not fetch the initial encoder weights.*init=None"):
        create_backbone(tiny)
    model = create_backbone(tiny.with_overrides(init=None)).eval()  # random init works offline
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, model.num_features)


def test_two_processes(tmp_path, launch_two_cpu_processes):
    """accelerate launch, 2 CPU processes, 2 steps: the bank holds the global batch on every rank."""
    out = tmp_path / "run"
    proc = launch_two_cpu_processes(
        ["-m", "ssl_zoo.train", "moco_v2_synth_r18_digits", "--max-steps", "2", "--batch-size", "8",
         "--num-workers", "0", "--output", str(out), "--set", "arch=test_resnet", "--set", f"base_args={TINY_BASE!r}",
         "--set", "bank_size=64", "--set", "decoder_channels=[8, 8, 8, 8, 8]"], {"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert int(state["bank_count"]) == 2 * 8 * 2  # 2 steps x 8 images x 2 processes: gathered
    assert int(state["base.queue_ptr"]) == 2 * 8 * 2
    assert (out / "model.safetensors").is_file()
