"""Importers: state dicts in each upstream key layout, built from a real torchvision ResNet
(BasicBlock, one block per stage to stay fast; random init), convert exactly into timm's layout;
wrong layouts / architectures fail clearly."""
from __future__ import annotations

import argparse
import json

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file, save_file
from torch import nn

from ssl_zoo.convert import FILTERS, ConversionError, configure_parser, convert_checkpoint, run_cli
from ssl_zoo.export import read_encoder_config

# timm's resnet18 with one block per stage: the same keys as the torchvision model above.
ARGS = {"layers": [1, 1, 1, 1]}


@pytest.fixture(scope="module")
def tv_resnet():
    torch.manual_seed(0)
    model = torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
    # Non-trivial BN statistics, so a dropped or swapped buffer would show.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
    return model.eval()


def backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}


def mlp_state(prefix: str, dims: tuple[int, ...]) -> dict[str, torch.Tensor]:
    out = {}
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        out[f"{prefix}{2 * i}.weight"] = torch.randn(b, a)
        out[f"{prefix}{2 * i}.bias"] = torch.randn(b)
    return out


def moco_checkpoint(model):
    bb = backbone_state(model)
    sd = {f"module.encoder_q.{k}": v for k, v in bb.items()}
    sd.update({f"module.encoder_k.{k}": v + 1 for k, v in bb.items()})
    sd.update(mlp_state("module.encoder_q.fc.", (512, 512, 128)))
    sd.update(mlp_state("module.encoder_k.fc.", (512, 512, 128)))
    sd["module.queue"] = torch.randn(128, 64)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {"epoch": 200, "arch": "resnet18", "state_dict": sd,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.03, "momentum": 0.9, "params": [0, 1]}]}}


def simsiam_checkpoint(model):
    bb = backbone_state(model)
    sd = {f"module.encoder.{k}": v for k, v in bb.items()}
    sd.update(mlp_state("module.encoder.fc.", (512, 512, 512, 512)))
    sd.update(mlp_state("module.predictor.", (512, 128, 512)))
    return {"epoch": 100, "arch": "resnet18", "state_dict": sd}


def lightly_checkpoint(model):
    # lightly's examples: backbone = nn.Sequential(*list(resnet.children())[:-1])
    seq = nn.Sequential(*list(model.children())[:-1])
    sd = {f"backbone.{k}": v.clone() for k, v in seq.state_dict().items()}
    sd.update({f"backbone_momentum.{k}": v + 1 for k, v in seq.state_dict().items()})
    sd.update(mlp_state("projection_head.layers.", (512, 512, 128)))
    return {"epoch": 10, "global_step": 100, "pytorch-lightning_version": "2.4.0", "state_dict": sd,
            "hyper_parameters": {"lr": 0.06}}


def solo_checkpoint(model):
    bb = backbone_state(model)
    sd = {f"backbone.{k}": v for k, v in bb.items()}
    sd.update({f"momentum_backbone.{k}": v + 1 for k, v in bb.items()})
    sd.update(mlp_state("projector.", (512, 2048, 256)))
    sd.update(mlp_state("classifier.", (512, 10)))
    return {"epoch": 400, "state_dict": sd}


def torchvision_checkpoint(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def timm_checkpoint(model):
    tm = timm.create_model("resnet18", num_classes=1000, **ARGS)
    tm.load_state_dict(model.state_dict())
    return tm.state_dict()


LAYOUTS = {"moco": moco_checkpoint, "simsiam": simsiam_checkpoint, "lightly": lightly_checkpoint,
           "solo": solo_checkpoint, "torchvision": torchvision_checkpoint, "timm": timm_checkpoint}


def test_every_source_has_a_layout_test():
    assert set(LAYOUTS) == set(FILTERS)


@pytest.mark.parametrize("source", sorted(LAYOUTS))
def test_round_trip_is_exact(source, tv_resnet, tmp_path):
    src = tmp_path / "upstream.pth.tar"
    torch.save(LAYOUTS[source](tv_resnet), src)
    out = convert_checkpoint(src, source, tmp_path / "out", arch="resnet18", model_args=ARGS)
    converted = load_file(str(out / "model.safetensors"))
    expected = backbone_state(tv_resnet)
    assert sorted(converted) == sorted(expected)
    for k, v in expected.items():
        assert torch.equal(converted[k], v), k
    cfg = read_encoder_config(out)
    assert cfg["architecture"] == "resnet18" and cfg["num_classes"] == 0 and cfg["num_features"] == 512
    assert cfg["ssl_zoo"]["imported"]["source"] == source
    # The same features as the upstream network without its head, through timm's strict loader.
    model = timm.create_model("resnet18", pretrained=True, num_classes=0, **ARGS,
                              pretrained_cfg_overlay=dict(file=str(out / "model.safetensors"))).eval()
    tv = torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
    tv.load_state_dict(tv_resnet.state_dict())
    tv.fc = nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv.eval()(x), rtol=1e-5, atol=1e-5)


def test_arch_read_from_checkpoint_and_safetensors_input(tv_resnet, tmp_path):
    src = tmp_path / "moco.pth.tar"
    torch.save(moco_checkpoint(tv_resnet), src)
    out = convert_checkpoint(src, "moco", tmp_path / "a", model_args=ARGS)  # arch from the checkpoint
    assert read_encoder_config(out)["architecture"] == "resnet18"
    st = tmp_path / "tv.safetensors"
    save_file(torchvision_checkpoint(tv_resnet), str(st))
    out2 = convert_checkpoint(st, "torchvision", tmp_path / "b", arch="resnet18", model_args=ARGS)
    assert load_file(str(out2 / "model.safetensors")).keys() == load_file(str(out / "model.safetensors")).keys()


def test_recipe_sets_architecture_and_provenance(tv_resnet, tmp_path):
    src = tmp_path / "simsiam.pth"
    torch.save(simsiam_checkpoint(tv_resnet), src)
    out = convert_checkpoint(src, "simsiam", tmp_path / "out", recipe="moco_v2_r18_digits",
                             model_args={**ARGS, "zero_init_last": False})
    info = read_encoder_config(out)["ssl_zoo"]
    assert info["recipe"] == "moco_v2_r18_digits" and info["imported"]["file"] == "simsiam.pth"
    assert len(info["imported"]["sha256"]) == 64
    with pytest.raises(ValueError, match="contradicts recipe"):
        convert_checkpoint(src, "simsiam", tmp_path / "x", arch="resnet50", recipe="moco_v2_r18_digits")


def test_wrong_source_names_the_layout(tv_resnet, tmp_path):
    src = tmp_path / "simsiam.pth"
    torch.save(simsiam_checkpoint(tv_resnet), src)
    with pytest.raises(ConversionError, match=r"No keys under 'module.encoder_q.'.*module.encoder"):
        convert_checkpoint(src, "moco", tmp_path / "out", arch="resnet18", model_args=ARGS)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_wrong_architecture_lists_keys(tv_resnet, tmp_path):
    src = tmp_path / "moco.pth.tar"
    torch.save(moco_checkpoint(tv_resnet), src)
    with pytest.raises(ConversionError, match=r"resnet18.*missing layer1\.1\.conv1\.weight"):
        convert_checkpoint(src, "moco", tmp_path / "out", arch="resnet18")  # two blocks per stage
    with pytest.raises(ConversionError, match=r"shape mismatches .*layer1\.0\.conv1\.weight \(64, 64, 3, 3\) vs "
                                              r"\(64, 64, 1, 1\)"):
        convert_checkpoint(src, "moco", tmp_path / "out", arch="resnet50", model_args=ARGS)


class Hyper:  # any non-tensor class (solo-learn stores an omegaconf config): weights_only must refuse it
    pass


def test_pickled_objects_are_refused(tmp_path):
    src = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}, "hyper_parameters": Hyper()}, src)
    with pytest.raises(ConversionError, match="weights_only=True"):
        convert_checkpoint(src, "lightly", tmp_path / "out", arch="resnet18")


def test_cli(tv_resnet, tmp_path, capsys):
    src = tmp_path / "solo.ckpt"
    torch.save(solo_checkpoint(tv_resnet), src)
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    out = tmp_path / "out"
    assert run_cli(parser.parse_args([str(src), "--source", "solo", "--arch", "resnet18",
                                      "--model-args", json.dumps(ARGS), "--out", str(out)])) == 0
    assert "512-d features" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["ssl_zoo"]["imported"]["epoch"] == 400
    assert run_cli(parser.parse_args([str(tmp_path / "missing.pth"), "--source", "solo", "--out", str(out)])) == 2
    assert "does not exist" in capsys.readouterr().err
