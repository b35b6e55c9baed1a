"""The training loop: lr rules, parameter groups, checkpoints, exact resume, non-finite loss, export, CLI.

Runs are tiny: moco_v2_r18_digits (timm's test_resnet or ResNet-18 at 32 px), batch 16, a 64-key queue, a few steps,
on a 40-image imagefolder made from scikit-learn's digits (2 optimiser steps per epoch).
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import CrashAtFourthForward, make_digit_folder, method_as
from safetensors.torch import load_file

import ssl_zoo
from ssl_zoo.checkpoint import load_checkpoint, save_checkpoint
from ssl_zoo.cli import main as cli_main
from ssl_zoo.methods.moco import MoCoV2
from ssl_zoo.optim import build_optimizer, build_param_groups, build_scheduler, scaled_lr
from ssl_zoo.train import NonFiniteLossError, parse_overrides, resolve_recipe, train

RECIPE = "moco_v2_r18_digits"
SMALL = {"queue_size": 64}
# timm's tiny test_resnet keeps checkpoints at ~3 MB (ResNet-18's are 138 MB); the CLI test uses ResNet-18.
# bn_group_size=8: two BatchNorm groups per batch of 16, so the split path is exercised.
TINY = {**SMALL, "arch": "test_resnet", "model_args": {}, "bn_group_size": 8}
RUN = dict(batch_size=16, num_workers=0, progress_bar=False, overrides=TINY)


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> Path:
    """40 real digit scans (4 classes x 10) as 32 px RGB PNGs in class folders."""
    return make_digit_folder(tmp_path_factory.mktemp("digits_folder"), per_class=10)


# -- pure rules --------------------------------------------------------------------------------------

def test_lr_scales_with_the_global_batch() -> None:
    assert scaled_lr(0.03, 256, 256) == pytest.approx(0.03)
    assert scaled_lr(0.06, 512, 256) == pytest.approx(0.12)
    assert scaled_lr(0.05, 2 * 64 * 4, 256) == pytest.approx(0.1)  # 2 processes x 64 x grad_accum 4
    with pytest.raises(ValueError):
        scaled_lr(0.1, 0, 256)


def test_weight_decay_reaches_every_parameter_by_default() -> None:
    """Official MoCo / SimSiam decay every parameter, BatchNorm weights and biases included."""
    method = ssl_zoo.create_method("moco_v2_r50_in1k", arch="test_resnet", model_args={}, **SMALL)
    recipe = ssl_zoo.get_recipe("moco_v2_r50_in1k")
    assert recipe.train.decay_norm_and_bias
    groups = build_param_groups(method, lr=0.1, weight_decay=1e-4)
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(trainable)
    assert all(g["weight_decay"] == 1e-4 for g in groups)
    decayed = {id(p) for g in groups for p in g["params"]}
    assert id(method.encoder.bn1.weight) in decayed and id(method.encoder.bn1.bias) in decayed
    # ... and the optimiser really shrinks a BN weight with a zero gradient
    optimizer = build_optimizer(groups, recipe)
    before = method.encoder.bn1.weight.detach().clone()
    for p in method.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    optimizer.step()
    assert torch.allclose(method.encoder.bn1.weight, before * (1 - 0.1 * 1e-4))


def test_no_weight_decay_on_norm_and_bias_when_asked() -> None:
    method = ssl_zoo.create_method(RECIPE, arch="test_resnet", model_args={}, **SMALL)
    assert not ssl_zoo.get_recipe(RECIPE).train.decay_norm_and_bias  # the digits demo's own choice
    groups = build_param_groups(method, lr=0.1, weight_decay=5e-4, decay_norm_and_bias=False)
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    listed = [id(p) for g in groups for p in g["params"]]
    assert sorted(listed) == sorted(trainable)  # every trainable parameter exactly once
    names = {id(p): n for n, p in method.named_parameters()}
    for g in groups:
        for p in g["params"]:
            if p.ndim <= 1:
                assert g["weight_decay"] == 0.0, names[id(p)]
            else:
                assert g["weight_decay"] == 5e-4, names[id(p)]
    assert any("bn" in names[id(p)] for g in groups if g["weight_decay"] == 0.0 for p in g["params"])
    assert not any(p.requires_grad for p in method.key_encoder.parameters())


class FixLrMoCo(MoCoV2):
    """MoCo whose projector keeps a constant lr (like SimSiam's predictor)."""

    def parameter_groups(self):
        head = [p for p in self.projector.parameters() if p.requires_grad]
        return [{"name": "encoder", "params": [p for p in self.encoder.parameters()], "fix_lr": False},
                {"name": "projector", "params": head, "fix_lr": True}]


ssl_zoo.register_method("test_fixlr_moco", FixLrMoCo)


def test_cosine_warmup_schedule_and_fix_lr_group() -> None:
    recipe = resolve_recipe(RECIPE, epochs=10, overrides={"method": "test_fixlr_moco", "arch": "test_resnet",
                                                          "model_args": {}, "warmup_epochs": 2, **SMALL})
    method = ssl_zoo.create_method(recipe)
    optimizer = build_optimizer(build_param_groups(method, 0.2, 1e-4), recipe)
    scheduler = build_scheduler(optimizer, recipe, total_steps=50, steps_per_epoch=5)
    fixed = [g for g in optimizer.param_groups if g["fix_lr"]]
    scheduled = [g for g in optimizer.param_groups if not g["fix_lr"]]
    assert fixed and scheduled
    lrs = []
    for _ in range(50):
        lrs.append(scheduled[0]["lr"])
        assert all(g["lr"] == pytest.approx(0.2) for g in fixed)
        optimizer.step()
        scheduler.step()
    assert lrs[:10] == pytest.approx([0.2 * (i + 1) / 10 for i in range(10)])  # linear warm-up, 2 epochs
    assert lrs[10] == pytest.approx(0.2)  # cosine starts at the peak ...
    assert lrs[30] == pytest.approx(0.2 * 0.5 * (1 + np.cos(np.pi * 20 / 40)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # ... and decreases
    assert lrs[-1] < 0.002


def test_parse_overrides() -> None:
    assert parse_overrides(["queue_size=64", "crop_scale=(0.2, 1.0)", "arch=resnet50", "init=None"]) == {
        "queue_size": 64, "crop_scale": (0.2, 1.0), "arch": "resnet50", "init": None}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["queue_size"])


def test_checkpoint_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})
    with pytest.raises(Exception):  # noqa: B017  (whatever pickling raises; the test checks what stays on disk)
        save_checkpoint(path, {"step": 2, "bad": lambda: None})  # fails while serialising
    assert load_checkpoint(path)["step"] == 1  # the previous file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp files left behind


# -- real runs -----------------------------------------------------------------------------------------

class InterruptAt(MoCoV2):
    """Sends itself Ctrl-C after optimiser step ``stop_at`` (the loop checkpoints and stops)."""

    stop_at = 1

    def after_optimizer_step(self, progress: float) -> None:
        super().after_optimizer_step(progress)
        self.steps_done = getattr(self, "steps_done", 0) + 1
        if self.steps_done == self.stop_at:
            os.kill(os.getpid(), signal.SIGINT)


class NaNAt(MoCoV2):
    """Returns a NaN loss from step 3 on."""

    def forward(self, views):
        out = super().forward(views)
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls >= 3:
            out["loss"] = out["loss"] * float("nan")
        return out


def _model_state(run_dir: Path) -> dict:
    return load_checkpoint(run_dir)["model"]


def test_resume_after_interrupt_and_crash_matches_uninterrupted_run(digit_folder: Path, tmp_path: Path) -> None:
    common = dict(data=str(digit_folder), epochs=2, **RUN)
    full = train(RECIPE, output=tmp_path / "full", **common)
    assert full["step"] == 4 and full["total_steps"] == 4 and not full["interrupted"]
    recipe = resolve_recipe(RECIPE, batch_size=16, epochs=2, overrides={**TINY, "dataset": "imagefolder"})

    # Ctrl-C in the middle of epoch 1: checkpoint after step 1, then resume.
    part = train(RECIPE, output=tmp_path / "cut", method=method_as(InterruptAt, recipe), **common)
    assert part["interrupted"] and part["step"] == 1
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    saved = load_checkpoint(tmp_path / "cut")
    assert (saved["step"], saved["epoch"], saved["micro_in_epoch"]) == (1, 0, 1)
    resumed = train(RECIPE, output=tmp_path / "cut", resume=True, **common)
    assert resumed["step"] == 4 and not resumed["interrupted"]

    # A crash in step 4 leaves the end-of-epoch-1 checkpoint (step 2); resuming from it also matches.
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(RECIPE, output=tmp_path / "crash", method=method_as(CrashAtFourthForward, recipe), **common)
    assert load_checkpoint(tmp_path / "crash")["step"] == 2
    train(RECIPE, output=tmp_path / "crash", resume=True, **common)

    reference = _model_state(tmp_path / "full")
    for run in ("cut", "crash"):
        state = _model_state(tmp_path / run)
        assert state.keys() == reference.keys()
        for key, value in reference.items():  # weights, BN statistics, momentum encoder, queue and pointer
            assert torch.equal(state[key], value), f"{run}: {key} differs from the uninterrupted run"
    assert torch.equal(load_checkpoint(tmp_path / "cut")["optimizer"]["state"][0]["momentum_buffer"],
                       load_checkpoint(tmp_path / "full")["optimizer"]["state"][0]["momentum_buffer"])

    # The export loads strictly into the timm model its config names.
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    encoder = timm.create_model(config["architecture"], num_classes=0, **config.get("model_args", {}))
    encoder.load_state_dict(load_file(tmp_path / "full" / "model.safetensors"), strict=True)
    assert config["ssl_zoo"]["dataset"] == "imagefolder" and config["ssl_zoo"]["metrics"]["steps"] == 4
    log = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if "epoch_loss" in r] == [1, 2]

    # Resuming with other settings is refused with the difference named.
    with pytest.raises(ValueError, match="queue_size"):
        train(RECIPE, output=tmp_path / "full", resume=True, **{**common, "overrides": {**TINY, "queue_size": 128}})


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(digit_folder: Path, tmp_path: Path) -> None:
    recipe = resolve_recipe(RECIPE, batch_size=16, epochs=3, overrides={**TINY, "dataset": "imagefolder"})
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*loss=nan.*pos_sim=") as info:
        train(RECIPE, data=str(digit_folder), epochs=3, output=tmp_path, method=method_as(NaNAt, recipe), **RUN)
    assert "last good checkpoint" in str(info.value)
    saved = load_checkpoint(tmp_path)
    assert saved["step"] == 2 and all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    assert not (tmp_path / "model.safetensors").exists()


def test_cli_trains_from_an_imagefolder(digit_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = cli_main(["train", RECIPE, "--data", str(digit_folder), "--epochs", "1", "--batch-size", "16",
                     "--grad-accum", "2", "--lr", "0.5", "--num-workers", "0", "--output", str(out),
                     "--set", "queue_size=64", "--set", "warmup_epochs=0", "--max-steps", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "read as 'imagefolder'" in captured.out
    config = json.loads((out / "config.json").read_text())
    train_info = config["ssl_zoo"]["train"]
    # --batch-size is global: 16 = 8 images per micro-step x grad_accum 2 on one process
    assert train_info["global_batch"] == 16 and train_info["per_process_batch"] == 8
    assert train_info["steps_per_epoch"] == 2 and train_info["total_steps"] == 1
    assert train_info["lr"] == pytest.approx(0.5 * 16 / 256)  # --lr replaces base_lr, then it is scaled
    assert config["ssl_zoo"]["recipe_config"]["train"]["base_lr"] == 0.5


def test_cli_rejects_bad_overrides(tmp_path: Path, capsys) -> None:
    assert cli_main(["train", RECIPE, "--output", str(tmp_path), "--set", "queue_sise=64"]) == 2
    assert "queue_size" in capsys.readouterr().err  # names the close match


def test_bad_image_stops_training_unless_skipping_is_asked(digit_folder: Path, tmp_path: Path, capsys) -> None:
    import shutil
    folder = tmp_path / "with_bad_image"
    shutil.copytree(digit_folder, folder)
    (folder / "class_0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    args = ["train", RECIPE, "--data", str(folder), "--epochs", "1", "--batch-size", "41", "--num-workers", "0",
            "--set", "queue_size=64", "--set", "arch=test_resnet", "--set", "model_args={}",
            "--set", "bn_group_size=None", "--max-steps", "1"]  # 41 images: one BatchNorm group
    assert cli_main([*args, "--output", str(tmp_path / "strict")]) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "--skip-bad-images" in err  # names the file and the way out
    with pytest.warns(RuntimeWarning, match="broken.png"):
        assert cli_main([*args, "--output", str(tmp_path / "skip"), "--skip-bad-images"]) == 0
    assert (tmp_path / "skip" / "model.safetensors").is_file()


@pytest.mark.parametrize("recipe", ["moco_v2_r18_digits", "leoclr_r18_digits", "simsiam_r18_digits",
                                    "moco_v2_synth_r18_digits"])
def test_bf16_mixed_precision_trains_every_method(recipe: str, tmp_path: Path) -> None:
    """A fresh process each: Accelerate keeps one mixed-precision setting per process."""
    import subprocess
    import sys
    cmd = [sys.executable, "-m", "ssl_zoo.train", recipe, "--mixed-precision", "bf16", "--max-steps", "2",
           "--batch-size", "8", "--num-workers", "0", "--set", "arch=test_resnet", "--set", "model_args={}",
           *(["--set", "decoder_pretrain_epochs=0"] if "synth" in recipe else []),
           "--output", str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["ssl_zoo"]["train"]["mixed_precision"] == "bf16"
    assert config["ssl_zoo"]["train"]["total_steps"] == 2


def test_channels_last_trains_the_same_run_and_exports_plain_weights(digit_folder: Path, tmp_path: Path) -> None:
    """NHWC memory format changes only the layout: the same losses, and exports that load strictly in timm."""
    common = dict(data=str(digit_folder), epochs=1, max_steps=2, log_every=1, **RUN)
    plain = train(RECIPE, output=tmp_path / "plain", channels_last=False, **common)
    nhwc = train(RECIPE, output=tmp_path / "nhwc", channels_last=True, **common)
    assert nhwc["final"]["loss"] == pytest.approx(plain["final"]["loss"], rel=1e-4, abs=1e-5)
    config = json.loads((tmp_path / "nhwc" / "config.json").read_text())
    encoder = timm.create_model(config["architecture"], num_classes=0, **config.get("model_args", {}))
    encoder.load_state_dict(load_file(tmp_path / "nhwc" / "model.safetensors"), strict=True)


def test_scalars_are_one_host_copy() -> None:
    from ssl_zoo.train import _scalars

    out = {"loss": torch.tensor(1.5, requires_grad=True) * 1, "pos_sim": torch.tensor([0.25, 0.75]), "note": "x"}
    assert _scalars(out) == {"loss": 1.5, "pos_sim": 0.5}


def test_online_knn_and_collapse_monitor_are_logged_every_n_epochs(tmp_path: Path) -> None:
    """--knn-every 1 on the embedded digits: k-NN top-1 and the feature-std monitor at each epoch end."""
    train(RECIPE, epochs=2, max_steps=None, output=tmp_path, knn_every=1, **{**RUN, "batch_size": 512})
    epochs = [r for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines()) if "epoch_loss" in r]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for record in epochs:
        assert 0 <= record["knn_top1"] <= 100 and record["feature_std"] > 0
    with pytest.raises(ValueError, match="--knn-every"):
        train(RECIPE, epochs=1, output=tmp_path / "x", knn_every=0, **RUN)


def test_collapse_monitor_warns_on_constant_features(capsys) -> None:
    from ssl_zoo.data import create_dataset
    from ssl_zoo.evaluation.monitor import online_knn

    class Collapsed(torch.nn.Module):
        num_features = 8

        def forward(self, x):
            return torch.ones(x.shape[0], 8)

    ds = create_dataset("digits", split="test", transform=lambda im: torch.zeros(3, 8, 8))
    from accelerate import Accelerator
    out = online_knn(Collapsed(), (ds, ds), Accelerator(cpu=True), print)
    assert out["feature_std"] == pytest.approx(0.0, abs=1e-6)
    assert "collapsing" in capsys.readouterr().out
