"""synth through the real training loop: decoder pre-training stage, encoder init, two processes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_digit_folder
from safetensors.torch import load_file

from ssl_zoo.decoder_pretrain import (
    DecoderPretraining,
    build_pretraining_method,
    export_decoder_from_checkpoint,
    pretrain_decoder,
    pretraining_overrides,
)
from ssl_zoo.errors import UserInputError
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
    # resume with another seed (it would build another decoder) is refused unless allowed; allowed, the
    # checkpoint's decoder comes back, not the other seed's fresh one
    with pytest.raises(UserInputError, match="seed 0 -> 1"):
        pretrain_decoder("moco_v2_synth_r18_digits", output=out, max_steps=2, overrides=dict(TINY),
                         resume=True, seed=1, progress_bar=False)
    again = pretrain_decoder("moco_v2_synth_r18_digits", output=out, max_steps=2, overrides=dict(TINY),
                             resume=True, seed=1, allow_changed=["seed"], progress_bar=False)
    assert all(torch.equal(load_file(again["decoder"])[k], v) for k, v in decoder.items())
    assert torch.equal(load_file(str(export_decoder_from_checkpoint(out, tmp_path / "d2.safetensors")))["fc.weight"],
                       decoder["fc.weight"])


def test_pretraining_method_trains_only_the_decoder():
    m = DecoderPretraining(create_backbone(get_recipe("moco_v2_synth_r18_digits").with_overrides(arch="test_resnet")),
                           image_size=32, decoder_channels=(8, 8, 8, 8, 8)).train()
    # training-mode BatchNorm on batch statistics, running statistics frozen (methods/decoder.py; B.2)
    assert m.encoder.training and m.view_names == ("plain",)
    before = {k: v.clone() for k, v in m.encoder.state_dict().items()}
    groups = m.parameter_groups()
    assert [g["name"] for g in groups] == ["decoder"]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in m.decoder.parameters()}
    m([torch.randn(4, 3, 32, 32)])["loss"].backward()
    assert all(p.grad is None for p in m.encoder.parameters())
    assert all(torch.equal(v, before[k]) for k, v in m.encoder.state_dict().items())
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
        ["-m", "ssl_zoo.train", "moco_v2_synth_r18_digits", "--max-steps", "2", "--batch-size", "16",
         "--num-workers", "0", "--output", str(out), "--set", "arch=test_resnet", "--set", f"base_args={TINY_BASE!r}",
         "--set", "bank_size=64", "--set", "decoder_channels=[8, 8, 8, 8, 8]", "--set", "decoder_pretrain_epochs=0"],
        {"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert int(state["bank_count"]) == 2 * 8 * 2  # 2 steps x 8 images x 2 processes (global batch 16): gathered
    assert int(state["base.queue_ptr"]) == 2 * 8 * 2
    assert (out / "model.safetensors").is_file()


# -- `ssl-zoo train <synth recipe>` runs the decoder stage first, resumable inside either stage ---------------

@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> Path:
    """32 digit scans (4 classes x 8) as 32 px RGB PNGs: 2 optimiser steps per epoch at batch 16."""
    return make_digit_folder(tmp_path_factory.mktemp("digits32"), per_class=8)


CHAIN = {"arch": "test_resnet", "model_args": {}, "base_args": TINY_BASE, "bank_size": 64,
         "decoder_channels": [8, 8, 8, 8, 8], "decoder_pretrain_epochs": 1}


def _interrupt_after_first_step(monkeypatch, cls) -> None:
    """``cls`` sends itself Ctrl-C after its first optimiser step: the loop checkpoints and stops."""
    import os
    import signal

    original = cls.after_optimizer_step

    def stop_once(self, progress):
        original(self, progress)
        if not getattr(self, "_stopped", False):
            self._stopped = True
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(cls, "after_optimizer_step", stop_once)


def test_train_chains_decoder_stage_and_resumes_inside_either_stage(tmp_path, digit_folder, monkeypatch):
    from ssl_zoo.checkpoint import load_checkpoint
    from ssl_zoo.methods.synth import SynthPairs
    from ssl_zoo.train import train

    common = dict(data=str(digit_folder), epochs=1, batch_size=16, num_workers=0, progress_bar=False,
                  overrides=CHAIN)
    full = train("moco_v2_synth_r18_digits", output=tmp_path / "full", **common)
    assert not full["interrupted"] and full["step"] == 2
    stage = tmp_path / "full" / "decoder_pretrain"
    assert (stage / "decoder.safetensors").is_file() and load_checkpoint(stage)["step"] == 2
    stored = load_checkpoint(tmp_path / "full")["recipe"]["method_args"]
    assert stored["decoder_weights"] == str(stage / "decoder.safetensors")  # the run used the stage's decoder
    # the main stage started from the pre-trained decoder: at equal seeds a fresh decoder differs from it
    torch.manual_seed(0)
    fresh = create_method(get_recipe("moco_v2_synth_r18_digits").with_overrides(**CHAIN)).decoder.state_dict()
    trained = load_file(str(stage / "decoder.safetensors"))
    assert any(not torch.equal(trained[k], fresh[k]) for k in fresh)

    # Ctrl-C inside the decoder stage, then --resume: the stage continues, then the main run
    with monkeypatch.context() as m:
        _interrupt_after_first_step(m, DecoderPretraining)
        cut = train("moco_v2_synth_r18_digits", output=tmp_path / "cut1", **common)
    assert cut["interrupted"] and load_checkpoint(tmp_path / "cut1" / "decoder_pretrain")["step"] == 1
    assert not (tmp_path / "cut1" / "checkpoint.pt").exists()
    done = train("moco_v2_synth_r18_digits", output=tmp_path / "cut1", resume=True, **common)
    assert not done["interrupted"] and done["step"] == 2

    # Ctrl-C inside the main stage, then --resume: the finished decoder stage is not run again
    with monkeypatch.context() as m:
        _interrupt_after_first_step(m, SynthPairs)
        cut = train("moco_v2_synth_r18_digits", output=tmp_path / "cut2", **common)
    assert cut["interrupted"] and load_checkpoint(tmp_path / "cut2")["step"] == 1
    stage_mtime = (tmp_path / "cut2" / "decoder_pretrain" / "decoder.safetensors").stat().st_mtime_ns
    done = train("moco_v2_synth_r18_digits", output=tmp_path / "cut2", resume=True, **common)
    assert not done["interrupted"] and done["step"] == 2
    assert (tmp_path / "cut2" / "decoder_pretrain" / "decoder.safetensors").stat().st_mtime_ns == stage_mtime

    # every route ends with the weights of the uninterrupted run (num_workers=0: deterministic)
    reference = load_checkpoint(tmp_path / "full")["model"]
    for run in ("cut1", "cut2"):
        state = load_checkpoint(tmp_path / run)["model"]
        for key, value in reference.items():
            assert torch.equal(state[key], value), f"{run}: {key}"

    # an explicit decoder skips the stage; decoder_pretrain_epochs=0 trains from an untrained one, with a warning
    given = train("moco_v2_synth_r18_digits", output=tmp_path / "given", max_steps=1,
                  **{**common, "overrides": {**CHAIN, "decoder_weights": str(stage / "decoder.safetensors")}})
    assert given["step"] == 1 and not (tmp_path / "given" / "decoder_pretrain").exists()
    with pytest.warns(RuntimeWarning, match="untrained decoder"):
        train("moco_v2_synth_r18_digits", output=tmp_path / "untrained", max_steps=1,
              **{**common, "overrides": {**CHAIN, "decoder_pretrain_epochs": 0}})
    assert not (tmp_path / "untrained" / "decoder_pretrain").exists()
