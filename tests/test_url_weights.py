"""`create_model(recipe, pretrained=True)` for weights at an upstream URL (the official MoCo / SimSiam
releases): downloaded once from a local HTTP server into a URL-keyed cache, verified, converted with
ssl_zoo.convert, loaded strictly; offline and checksum errors; the official linear classifier.
The served files are written here in the official key layouts (../shared/CHECKPOINT_FORMATS.md),
from a small timm ResNet-18 (one block per stage)."""
from __future__ import annotations

import hashlib
import re
import socket
import sys
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants
from timm.data import resolve_data_config

import ssl_zoo
from ssl_zoo import hub as H
from ssl_zoo.export import read_encoder_config, save_encoder, timm_pretrained_cfg
from ssl_zoo.recipe import _RECIPES, WeightsCfg

sys.path.insert(0, str(Path(__file__).parent))
from official_checkpoints import MODEL_ARGS, lincls_file, moco_file, simsiam_file, upstream_backbone  # noqa: E402
from url_server import FileServer  # noqa: E402

BASE = ssl_zoo.get_recipe("moco_v2_r18_digits").with_overrides(model_args=MODEL_ARGS)  # resnet18, 32 px


@pytest.fixture(scope="module")
def srv():
    with FileServer() as server:
        yield server


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Fresh torch.hub (URL weights) and Hugging Face caches; online."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "torch_home" / "hub" / "checkpoints" / "ssl_zoo"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def register(monkeypatch, name: str, **weights) -> ssl_zoo.Recipe:
    """A recipe in the registry for this test only."""
    recipe = BASE.with_overrides(name=name, weights={"license": "cc-by-nc-4.0", **weights})
    monkeypatch.setitem(_RECIPES, name, recipe)
    return recipe


def data_config(model) -> dict:
    """timm's resolved preprocessing (JSON lists as tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in resolve_data_config({}, model=model).items()}


def features(model, seed: int = 1) -> torch.Tensor:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def test_first_load_downloads_converts_and_loads_then_never_touches_the_network(srv, cache, monkeypatch):
    up = upstream_backbone(0)
    data = moco_file(up)
    path = "/moco/moco_v2_200ep/moco_v2_200ep_pretrain.pth.tar"
    srv.files[path] = data
    register(monkeypatch, "test_moco_url", url=srv.url(path), md5=md5(data)[:8], source="moco")
    assert "test_moco_url" in ssl_zoo.list_pretrained()

    model = ssl_zoo.create_model("test_moco_url", pretrained=True)
    assert srv.gets(path) == 1
    assert torch.equal(features(model), features(up))
    folder = H.url_cache_folder(srv.url(path))
    assert folder.parent == cache and (folder / "moco_v2_200ep_pretrain.pth.tar").read_bytes() == data
    info = read_encoder_config(folder / "converted")["ssl_zoo"]
    assert info["recipe"] == "test_moco_url" and info["imported"]["md5"] == md5(data)

    again = ssl_zoo.create_model("test_moco_url", pretrained=True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    offline = ssl_zoo.create_model("test_moco_url", pretrained=True)
    assert srv.gets(path) == 1  # neither call made a request
    assert torch.equal(features(again), features(up)) and torch.equal(features(offline), features(up))

    # The converted folder is a timm model folder with this recipe's preprocessing (a 32-px model).
    timm_model = timm.create_model(f"local-dir:{folder / 'converted'}", pretrained=True)
    assert torch.equal(features(timm_model), features(up))
    data_cfg = data_config(timm_model)
    assert data_cfg == {"input_size": (3, 32, 32), "interpolation": "bilinear", "mean": (0.5, 0.5, 0.5),
                        "std": (0.5, 0.5, 0.5), "crop_pct": 1.0, "crop_mode": "center"}  # 32 px: the whole image
    assert tuple(timm_model.pretrained_cfg["pool_size"]) == (1, 1)


def test_a_new_upload_with_a_new_checksum_replaces_the_cached_file_and_conversion(srv, cache, monkeypatch):
    old, new = upstream_backbone(8), upstream_backbone(9)
    path = "/moco/replaced/moco_v2_200ep_pretrain.pth.tar"
    srv.files[path] = moco_file(old)
    register(monkeypatch, "test_replaced_url", url=srv.url(path), md5=md5(srv.files[path])[:8], source="moco")
    assert torch.equal(features(ssl_zoo.create_model("test_replaced_url", pretrained=True)), features(old))
    srv.files[path] = moco_file(new)
    register(monkeypatch, "test_replaced_url", url=srv.url(path), md5=md5(srv.files[path])[:8], source="moco")
    assert torch.equal(features(ssl_zoo.create_model("test_replaced_url", pretrained=True)), features(new))
    assert srv.gets(path) == 2


def test_a_recipe_with_another_architecture_gets_its_own_conversion(srv, cache, monkeypatch):
    up = upstream_backbone(10)
    path = "/moco/arch/moco_v2_200ep_pretrain.pth.tar"
    srv.files[path] = moco_file(up)
    register(monkeypatch, "test_arch_a", url=srv.url(path), source="moco")
    assert torch.equal(features(ssl_zoo.create_model("test_arch_a", pretrained=True)), features(up))
    # resnet34 with one block per stage has resnet18's keys: same weights, another timm architecture
    other = BASE.with_overrides(name="test_arch_b", arch="resnet34", weights={"url": srv.url(path), "source": "moco"})
    monkeypatch.setitem(_RECIPES, other.name, other)
    assert torch.equal(features(ssl_zoo.create_model("test_arch_b", pretrained=True)), features(up))
    config = read_encoder_config(H.url_cache_folder(srv.url(path)) / "converted")
    assert config["architecture"] == "resnet34" and config["ssl_zoo"]["recipe"] == "test_arch_b"
    assert srv.gets(path) == 1


def test_interrupted_download_resumes_with_a_range_request(srv, cache, monkeypatch):
    up = upstream_backbone(1)
    data = simsiam_file(up)
    path = "/simsiam/resume/checkpoint_0099.pth.tar"
    srv.files[path] = data
    register(monkeypatch, "test_resume_url", url=srv.url(path), source="simsiam")
    folder = H.url_cache_folder(srv.url(path))
    folder.mkdir(parents=True)
    (folder / "checkpoint_0099.pth.tar.incomplete").write_bytes(data[: len(data) // 3])
    model = ssl_zoo.create_model("test_resume_url", pretrained=True)
    assert torch.equal(features(model), features(up))
    assert [r for m, p, r in srv.requests if p == path] == [f"bytes={len(data) // 3}-"]
    assert (folder / "checkpoint_0099.pth.tar").read_bytes() == data
    assert not (folder / "checkpoint_0099.pth.tar.incomplete").exists()


@pytest.mark.parametrize("kind", ["md5", "sha256"])
def test_corrupted_download_is_refused_and_not_kept(srv, cache, monkeypatch, kind):
    up = upstream_backbone(2)
    good = moco_file(up)
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    path = f"/moco/corrupt-{kind}/moco_v2_800ep_pretrain.pth.tar"
    srv.files[path] = bytes(bad)
    checksum = {"md5": md5(good)[:8]} if kind == "md5" else {"sha256": hashlib.sha256(good).hexdigest()}
    register(monkeypatch, "test_corrupt_url", url=srv.url(path), source="moco", **checksum)
    with pytest.raises(H.ChecksumMismatchError) as info:
        ssl_zoo.create_model("test_corrupt_url", pretrained=True)
    message = str(info.value)
    assert "\n" not in message and srv.url(path) in message and f"{kind} is " in message
    assert "deleted from the cache" in message
    folder = H.url_cache_folder(srv.url(path))
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) == []
    # A bad file placed in the cache by hand is refused and removed too.
    (folder / "moco_v2_800ep_pretrain.pth.tar").write_bytes(bytes(bad))
    with pytest.raises(H.ChecksumMismatchError):
        ssl_zoo.create_model("test_corrupt_url", pretrained=True)
    assert not (folder / "moco_v2_800ep_pretrain.pth.tar").exists()
    # Once the URL serves the right bytes, the next call downloads them and loads.
    srv.files[path] = good
    assert torch.equal(features(ssl_zoo.create_model("test_corrupt_url", pretrained=True)), features(up))


def test_offline_error_names_the_url_and_where_to_put_the_file(srv, cache, monkeypatch):
    up = upstream_backbone(3)
    data = moco_file(up)
    path = "/moco/offline/moco_v1_200ep_pretrain.pth.tar"
    srv.files[path] = data
    register(monkeypatch, "test_offline_url", url=srv.url(path), md5=md5(data)[:8], source="moco")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    n_requests = len(srv.requests)
    with pytest.raises(H.WeightsOfflineError) as info:
        ssl_zoo.create_model("test_offline_url", pretrained=True)
    message = str(info.value)
    assert "\n" not in message and "HF_HUB_OFFLINE" in message and srv.url(path) in message
    assert len(srv.requests) == n_requests  # no HTTP at all
    # Following the message: the file placed there by hand is verified, converted and loaded offline.
    target = Path(re.search(r"place it at (\S+) ", message).group(1))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    assert torch.equal(features(ssl_zoo.create_model("test_offline_url", pretrained=True)), features(up))
    assert len(srv.requests) == n_requests


def test_hf_hub_offline_environment_variable_in_a_fresh_process(srv, tmp_path):
    """HF_HUB_OFFLINE=1 in the environment (read when huggingface_hub is imported): the one-line error."""
    import os
    import subprocess

    path = "/moco/env-offline/moco_v2_200ep_pretrain.pth.tar"
    srv.files[path] = b"never served"
    code = ("import ssl_zoo\n"
            "from ssl_zoo.hub import WeightsOfflineError\n"
            f"r = ssl_zoo.get_recipe('moco_v2_r50_in1k').with_overrides(url={srv.url(path)!r})\n"
            "try:\n    ssl_zoo.create_model(r, pretrained=True)\n"
            "except WeightsOfflineError as exc:\n    print(exc)\n    raise SystemExit(3)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "torch_home"),
           "HF_HUB_CACHE": str(tmp_path / "hf_cache"), "PYTHONPATH": str(Path(__file__).parents[1])}
    n_requests = len(srv.requests)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    message = proc.stdout.strip()
    assert "\n" not in message and "HF_HUB_OFFLINE is set" in message and srv.url(path) in message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / "ssl_zoo") in message
    assert len(srv.requests) == n_requests


def test_unreachable_server_is_one_line(cache, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/moco/moco_v2_200ep_pretrain.pth.tar"
    register(monkeypatch, "test_unreachable_url", url=url, md5="59fd9945", source="moco")
    with pytest.raises(H.WeightsOfflineError) as info:
        ssl_zoo.create_model("test_unreachable_url", pretrained=True)
    message = str(info.value)
    assert "\n" not in message and url in message and "place it at" in message


def test_urls_with_the_same_file_name_do_not_collide(srv, cache, monkeypatch):
    ups = [upstream_backbone(4), upstream_backbone(5)]
    for i, up in enumerate(ups):
        srv.files[f"/simsiam/run{i}/pretrain/checkpoint_0099.pth.tar"] = simsiam_file(up)
        register(monkeypatch, f"test_same_name_{i}", url=srv.url(f"/simsiam/run{i}/pretrain/checkpoint_0099.pth.tar"),
                 source="simsiam")
    for i, up in enumerate(ups):
        assert torch.equal(features(ssl_zoo.create_model(f"test_same_name_{i}", pretrained=True)), features(up))
    assert not torch.equal(features(ups[0]), features(ups[1]))
    assert H.url_cache_folder(srv.url("/simsiam/run0/pretrain/checkpoint_0099.pth.tar")) != \
        H.url_cache_folder(srv.url("/simsiam/run1/pretrain/checkpoint_0099.pth.tar"))
    # Files already in our format (no conversion), both called model.safetensors (issue 11, A5).
    for i, up in enumerate(ups):
        save_encoder(up, cache.parent / f"export{i}", BASE)
        srv.files[f"/org{i}/model.safetensors"] = (cache.parent / f"export{i}" / "model.safetensors").read_bytes()
        register(monkeypatch, f"test_safetensors_{i}", url=srv.url(f"/org{i}/model.safetensors"))
    for i, up in enumerate(ups):
        assert torch.equal(features(ssl_zoo.create_model(f"test_safetensors_{i}", pretrained=True)), features(up))


def test_official_linear_classifier_with_num_classes(srv, cache, monkeypatch):
    up = upstream_backbone(6)
    fc = torch.nn.Linear(512, 10)
    srv.files["/simsiam/cls/pretrain/checkpoint_0099.pth.tar"] = simsiam_file(up)
    srv.files["/simsiam/cls/linear/model_best.pth.tar"] = lincls_file(up, fc)
    register(monkeypatch, "test_classifier_url", url=srv.url("/simsiam/cls/pretrain/checkpoint_0099.pth.tar"),
             source="simsiam", classifier_url=srv.url("/simsiam/cls/linear/model_best.pth.tar"),
             classifier_classes=10)
    clf = ssl_zoo.create_model("test_classifier_url", pretrained=True, num_classes=10)
    expected = fc(features(up))
    assert torch.allclose(features(clf), expected, atol=1e-5)
    assert torch.equal(features(clf).argmax(1), expected.argmax(1))
    assert (H.url_cache_folder(srv.url("/simsiam/cls/linear/model_best.pth.tar")) / H.CLASSIFIER_NAME).is_file()
    n_requests = len(srv.requests)
    again = ssl_zoo.create_model("test_classifier_url", pretrained=True, num_classes=10)
    assert torch.equal(features(again), features(clf)) and len(srv.requests) == n_requests
    # another number of classes: a fresh head on the pre-trained backbone, the classifier is not used
    fresh = ssl_zoo.create_model("test_classifier_url", pretrained=True, num_classes=7)
    assert fresh.get_classifier().out_features == 7 and len(srv.requests) == n_requests
    fresh.reset_classifier(0)
    assert torch.equal(features(fresh), features(up))

    # A classifier probed on other backbone weights is refused (it would mislabel everything).
    srv.files["/simsiam/other/linear/model_best.pth.tar"] = lincls_file(upstream_backbone(7), fc)
    register(monkeypatch, "test_classifier_other", url=srv.url("/simsiam/cls/pretrain/checkpoint_0099.pth.tar"),
             source="simsiam", classifier_url=srv.url("/simsiam/other/linear/model_best.pth.tar"),
             classifier_classes=10)
    with pytest.raises(H.WeightsError, match="trained on other backbone weights"):
        ssl_zoo.create_model("test_classifier_other", pretrained=True, num_classes=10)
    with pytest.raises(ValueError, match="classifier_url and classifier_classes go together"):
        WeightsCfg(classifier_url="https://example.org/model_best.pth.tar")


def test_exported_32px_model_has_a_32px_config_in_timm(tmp_path):
    recipe = ssl_zoo.get_recipe("moco_v2_r18_digits")
    enc = ssl_zoo.create_model(recipe)
    folder = save_encoder(enc, tmp_path / "digits", recipe)
    pcfg = read_encoder_config(folder)["pretrained_cfg"]
    assert pcfg["pool_size"] == [1, 1] and pcfg["input_size"] == [3, 32, 32]
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert torch.equal(features(model), features(enc))
    assert data_config(model) == {
        "input_size": (3, 32, 32), "interpolation": recipe.augment.interpolation, "mean": recipe.augment.mean,
        "std": recipe.augment.std, "crop_pct": 1.0, "crop_mode": "center"}
    # at timm's default size, timm's own pool size; at 96 px, from the output stride of 32
    assert timm_pretrained_cfg(ssl_zoo.get_recipe("moco_v2_r50_in1k").pretrained_cfg(), "resnet50")["pool_size"] \
        == [7, 7]
    stl = ssl_zoo.get_recipe("moco_v2_r18_stl10")
    assert timm_pretrained_cfg(stl.pretrained_cfg(), "resnet18", enc)["pool_size"] == [3, 3]


def test_official_releases_are_listed_with_their_license(capsys):
    from ssl_zoo.cli import main as cli_main
    from ssl_zoo.convert import FILTERS

    official = {"moco_v2_r50_in1k": "moco", "moco_v2_r50_in1k_800ep": "moco", "simsiam_r50_in1k": "simsiam",
                "simsiam_r50_in1k_bs256": "simsiam"}
    assert set(official) <= set(ssl_zoo.list_pretrained())
    for name, source in official.items():
        w = ssl_zoo.get_recipe(name).weights
        assert w.source == source and source in FILTERS and w.license == "cc-by-nc-4.0"
        assert w.url.startswith("https://dl.fbaipublicfiles.com/") and w.url.endswith(".pth.tar")
        assert (w.md5 is not None) == (source == "moco")  # the SimSiam README publishes no checksum
        assert (w.classifier_classes == 1000) == (source == "simsiam")
    assert len({ssl_zoo.get_recipe(n).weights.url for n in official}) == len(official)
    assert cli_main(["list", "--pretrained"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "license" in lines[0]
    for name in official:
        row = next(line for line in lines if line.split()[0] == name)
        assert "cc-by-nc-4.0" in row and ssl_zoo.get_recipe(name).weights.url in row
