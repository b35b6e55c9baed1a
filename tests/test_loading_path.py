"""One loading path: the same weights loaded from every kind of source give identical features.

Sources: an exported folder (`local-dir:`, a path, timm's own loader), a run folder holding only the
training state, a Hub repo (tests/hub_server.py), a recipe's `weights.file`, an explicit checkpoint,
a recipe's URL weights in the official MoCo layout (tests/url_server.py, converted on first use),
`ssl-zoo visualize`'s loader and `ssl-zoo eval`'s loader. A small timm ResNet-18 at 32 px.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants
from huggingface_hub.utils import disable_progress_bars

import ssl_zoo
from ssl_zoo.checkpoint import save_checkpoint
from ssl_zoo.evaluation.cli import load_encoder
from ssl_zoo.export import save_encoder
from ssl_zoo.hub import push_to_hub
from ssl_zoo.recipe import _RECIPES
from ssl_zoo.visualize import load_for_pictures
from ssl_zoo.weights import ArchitectureMismatchError, ModelSource, build_model, resolve_source

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402
from official_checkpoints import MODEL_ARGS, moco_file, upstream_backbone  # noqa: E402
from url_server import FileServer  # noqa: E402

RECIPE = ssl_zoo.get_recipe("moco_v2_r18_digits").with_overrides(name="test_loading_path", model_args=MODEL_ARGS)
TOKEN = "hf_test_loading_path_token"


def features(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture
def servers(tmp_path, monkeypatch):
    """The test Hub and a plain file server, with fresh Hugging Face and torch.hub caches."""
    disable_progress_bars()
    with HubServer() as hub, FileServer() as files:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
        yield hub, files


def test_every_source_kind_loads_the_same_weights(servers, tmp_path, monkeypatch):
    hub, files = servers
    upstream = upstream_backbone(3)
    expected = features(upstream)

    model_dir = save_encoder(upstream, tmp_path / "model", RECIPE)
    run_dir = tmp_path / "run"  # a run interrupted before its export: only the training state
    method_state = {f"encoder.{k}": v for k, v in upstream.state_dict().items()}
    method_state["head.weight"] = torch.zeros(4, 4)  # the method's other parts are not the encoder's
    save_checkpoint(run_dir / "checkpoint.pt", {"model": method_state, "recipe": RECIPE.to_dict()})
    push_to_hub(model_dir, "org/loading", token=TOKEN, endpoint=hub.url)
    files.files["/moco/loading/moco_v2_200ep_pretrain.pth.tar"] = moco_file(upstream)
    url = files.url("/moco/loading/moco_v2_200ep_pretrain.pth.tar")
    monkeypatch.setitem(_RECIPES, "test_loading_url", RECIPE.with_overrides(
        name="test_loading_url", weights={"url": url, "source": "moco"}))
    monkeypatch.setitem(_RECIPES, "test_loading_file", RECIPE.with_overrides(
        name="test_loading_file", weights={"file": str(model_dir / "model.safetensors")}))

    loaded = {
        "local-dir: export": ssl_zoo.create_model(f"local-dir:{model_dir}"),
        "export path": ssl_zoo.create_model(model_dir),
        "local-dir: run (training state)": ssl_zoo.create_model(f"local-dir:{run_dir}"),
        "hf-hub": ssl_zoo.create_model("hf-hub:org/loading", pretrained=True),
        "recipe weights.file": ssl_zoo.create_model("test_loading_file", pretrained=True),
        "recipe + checkpoint folder": ssl_zoo.create_model(RECIPE, checkpoint=model_dir),
        "recipe + training checkpoint": ssl_zoo.create_model(RECIPE, checkpoint=run_dir / "checkpoint.pt"),
        "recipe URL weights (official MoCo)": ssl_zoo.create_model("test_loading_url", pretrained=True),
        "visualize: export": load_for_pictures(model_dir)[1],
        "visualize: run": load_for_pictures(run_dir)[1],
        "eval: export": load_encoder(str(model_dir))[0],
        "eval: run": load_encoder(str(run_dir))[0],
        "timm local-dir:": timm.create_model(f"local-dir:{model_dir}", pretrained=True),
    }
    differ = [name for name, model in loaded.items() if not torch.equal(features(model), expected)]
    assert not differ, differ


def test_one_builder_reports_foreign_weights_by_key(tmp_path):
    other = save_encoder(timm.create_model("test_resnet", num_classes=0), tmp_path / "other",
                         architecture="test_resnet")
    source = resolve_source(RECIPE, checkpoint=other)
    assert isinstance(source, ModelSource) and source.architecture == "resnet18"
    assert source.origin.startswith("checkpoint")
    with pytest.raises(ArchitectureMismatchError, match=r"do not fit resnet18: \d+ missing keys .*unexpected"):
        build_model(source)
