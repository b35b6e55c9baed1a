"""Files in the official MoCo / SimSiam checkpoint layouts (../shared/CHECKPOINT_FORMATS.md), built
from a small timm ResNet-18 (one block per stage, the same keys as torchvision's) for tests."""
from __future__ import annotations

import io

import timm
import torch

MODEL_ARGS = {"layers": [1, 1, 1, 1], "zero_init_last": False}


def upstream_backbone(seed: int) -> torch.nn.Module:
    """The pre-trained network: random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = timm.create_model("resnet18", num_classes=0, **MODEL_ARGS)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(5)
    return model.eval()


def mlp(prefix: str, dims: tuple[int, ...]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{2 * i}.{n}": torch.randn(b, a) if n == "weight" else torch.randn(b)
            for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])) for n in ("weight", "bias")}


def legacy_bytes(obj) -> bytes:
    """torch.save in the pre-zip format of the 2020 releases."""
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def moco_file(model) -> bytes:
    sd = {}
    for k, v in model.state_dict().items():
        sd[f"module.encoder_q.{k}"], sd[f"module.encoder_k.{k}"] = v.clone(), v + 1
    sd.update(mlp("module.encoder_q.fc.", (512, 512, 128)))
    sd.update(mlp("module.encoder_k.fc.", (512, 512, 128)))
    sd["module.queue"], sd["module.queue_ptr"] = torch.randn(128, 64), torch.zeros(1, dtype=torch.long)
    return legacy_bytes({"epoch": 200, "arch": "resnet50", "state_dict": sd,
                         "optimizer": {"state": {}, "param_groups": [{"lr": 0.03, "params": [0]}]}})


def simsiam_file(model) -> bytes:
    sd = {f"module.encoder.{k}": v.clone() for k, v in model.state_dict().items()}
    sd.update(mlp("module.encoder.fc.", (512, 512, 512, 512)))
    sd.update(mlp("module.predictor.", (512, 128, 512)))
    return legacy_bytes({"epoch": 100, "arch": "resnet50", "state_dict": sd, "optimizer": {"state": {}}})


def lincls_file(model, fc: torch.nn.Linear) -> bytes:
    sd = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    sd["module.fc.weight"], sd["module.fc.bias"] = fc.weight.detach().clone(), fc.bias.detach().clone()
    return legacy_bytes({"epoch": 90, "arch": "resnet50", "state_dict": sd, "best_acc1": 68.1,
                         "optimizer": {"state": {}}})
