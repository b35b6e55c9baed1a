"""Feature extraction: dataset order, eval mode, and 2 processes == 1 process (padding dropped)."""
from __future__ import annotations

import json
import tempfile

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import PrepareForLaunch, patch_environment
from torch import nn
from torch.multiprocessing import start_processes
from torch.utils.data import DataLoader, TensorDataset

from ssl_zoo.evaluation import extract_features, knn_accuracy, retrieval_metrics

N_ITEMS = 11  # odd: with 2 processes and batch 2 Accelerate pads the last batches
TINY_DATASET = "eval_test_tiny"  # digits subset: 41 train / 23 test images (odd sizes)


def _build_tiny(root, split, **kwargs):
    from ssl_zoo.data import ArrayImageDataset
    from ssl_zoo.data.digits import digits_arrays

    images, labels, splits = digits_arrays()
    idx = splits[split][: 41 if split == "train" else 23]
    return ArrayImageDataset(images[idx], labels[idx], [str(d) for d in range(10)], name=TINY_DATASET, root=None,
                             split=split)


def register_tiny_dataset() -> None:
    from ssl_zoo.data import list_datasets, register_dataset

    if TINY_DATASET not in list_datasets():
        register_dataset(TINY_DATASET, _build_tiny, "(test only)", ("train", "test"))


def export_tiny_encoder(out_dir) -> str:
    """A timm ``test_resnet`` exported like a training run (model.safetensors + config.json)."""
    import timm

    from ssl_zoo.export import save_encoder

    torch.manual_seed(0)
    encoder = timm.create_model("test_resnet", num_classes=0)
    encoder.pretrained_cfg = {**encoder.pretrained_cfg, "input_size": (3, 16, 16)}
    return str(save_encoder(encoder, out_dir, architecture="test_resnet"))


def cli_args(model_dir: str, output, *extra: str) -> list[str]:
    return ["--model", model_dir, "--dataset", TINY_DATASET, "--batch-size", "8", "--num-workers", "0",
            "--output", str(output), *extra]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    # Accelerate's state is a process-wide singleton (inherited by forked workers): start and end clean.
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(N_ITEMS, 3, 8, 8, generator=g)
    labels = torch.arange(N_ITEMS) % 3
    return TensorDataset(images, labels)


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    # BatchNorm + Dropout make eval mode observable: train mode would change the output.
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _reference() -> tuple[torch.Tensor, torch.Tensor]:
    encoder = _encoder().eval()
    images, labels = _dataset().tensors
    with torch.no_grad():
        return encoder(images), labels


def test_extract_features_in_order_eval_mode_and_restores_mode():
    encoder = _encoder().train()
    features, labels = extract_features(encoder, _dataset(), batch_size=4)
    ref_f, ref_l = _reference()
    assert features.dtype == torch.float32 and features.device.type == "cpu"
    torch.testing.assert_close(features, ref_f)
    assert torch.equal(labels, ref_l)
    assert encoder.training  # mode restored
    assert all(p.grad is None for p in encoder.parameters())


def test_extract_features_rejects_shuffling_loader_and_multiview_batches():
    with pytest.raises(ValueError, match="shuffle"):
        extract_features(_encoder(), DataLoader(_dataset(), shuffle=True))
    multiview = [([torch.zeros(3, 8, 8), torch.zeros(3, 8, 8)], 0)]
    with pytest.raises(ValueError, match="multi-view"):
        extract_features(_encoder(), multiview, batch_size=1)


def test_extract_features_with_single_process_accelerator():
    features, labels = extract_features(_encoder(), _dataset(), batch_size=3, accelerator=Accelerator(cpu=True))
    ref_f, ref_l = _reference()
    torch.testing.assert_close(features, ref_f)
    assert torch.equal(labels, ref_l)


def _distributed_worker(out_path: str, model_dir: str) -> None:
    from ssl_zoo.evaluation.cli import main

    register_tiny_dataset()
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2
    features, labels = extract_features(_encoder(), _dataset(), batch_size=2, accelerator=accelerator)
    if accelerator.is_main_process:
        metrics = {"knn": knn_accuracy(features, labels, features, labels, k=3),
                   **retrieval_metrics(features, labels)}
        torch.save({"features": features, "labels": labels, "metrics": metrics}, out_path)
    accelerator.wait_for_everyone()
    # The benchmark entry point on the same Accelerate state, as under `accelerate launch`.
    assert main(cli_args(model_dir, out_path + ".knn.json", "--k", "3", "20"), protocol="knn") == 0
    assert main(cli_args(model_dir, out_path + ".retrieval.json"), protocol="retrieval") == 0
    # Leave together: a process that exits while gloo's threads of the other still talk to it can abort
    # ("terminate called without an active exception").
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()


def _spawn_launcher(function, args=(), num_processes: int = 2) -> None:
    """accelerate.debug_launcher with "spawn": forking after torch has run ops in this process
    (earlier tests) can deadlock the children in OpenMP, so start fresh interpreters."""
    with tempfile.NamedTemporaryFile() as rdv, patch_environment(
            world_size=num_processes, master_addr="127.0.0.1", master_port="29500",
            accelerate_mixed_precision="no", accelerate_debug_rdv_file=rdv.name, accelerate_use_cpu="yes",
            gloo_socket_ifname="lo", omp_num_threads="1"):
        start_processes(PrepareForLaunch(function, debug=True), args=args, nprocs=num_processes,
                        start_method="spawn")


def test_two_processes_match_one_process(tmp_path):
    from ssl_zoo.evaluation.cli import main

    out = tmp_path / "dist.pt"
    model_dir = export_tiny_encoder(tmp_path / "model")
    _reference()  # torch ops in the parent first: the launcher must not deadlock after them
    _spawn_launcher(_distributed_worker, args=(str(out), model_dir), num_processes=2)
    result = torch.load(out, weights_only=True)
    ref_f, ref_l = _reference()
    assert result["features"].shape == (N_ITEMS, ref_f.shape[1])  # padding dropped, no duplicates
    torch.testing.assert_close(result["features"], ref_f)
    assert torch.equal(result["labels"], ref_l)
    expected = {"knn": knn_accuracy(ref_f, ref_l, ref_f, ref_l, k=3), **retrieval_metrics(ref_f, ref_l)}
    assert result["metrics"] == pytest.approx(expected)
    # The CLI: 2 processes (padding dropped) == 1 process, computed once and written by the main process.
    register_tiny_dataset()
    for protocol, extra in (("knn", ("--k", "3", "20")), ("retrieval", ())):
        two = json.loads((tmp_path / f"dist.pt.{protocol}.json").read_text())
        one_path = tmp_path / f"one.{protocol}.json"
        AcceleratorState._reset_state(reset_partial_state=True)
        assert main(cli_args(model_dir, one_path, *extra), protocol=protocol) == 0
        one = json.loads(one_path.read_text())
        assert two["world_size"] == 2 and one["world_size"] == 1
        assert two["metrics"] == one["metrics"] and len(one["metrics"]) in (2, 3)
        assert two["dataset"]["num_test"] == 23
