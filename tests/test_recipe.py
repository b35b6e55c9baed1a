"""Recipe registry, overrides and the create_* factories."""
import dataclasses

import pytest
import timm
import torch

import ssl_zoo
from ssl_zoo.recipe import AugmentCfg, BackboneCfg, Recipe, TrainCfg, WeightsCfg


def test_list_models_filters_and_sorts():
    names = ssl_zoo.list_models("moco*")
    assert names == sorted(names)
    assert "moco_v2_r18_digits" in names and "moco_v2_r50_in1k" in names
    assert all(n.startswith("moco") for n in names)
    assert ssl_zoo.list_models(["moco_v2_r18_digits", "nothing*"]) == ["moco_v2_r18_digits"]
    assert set(ssl_zoo.list_models()) >= set(names)


def test_list_pretrained_only_lists_published_weights():
    assert set(ssl_zoo.list_pretrained()) <= set(ssl_zoo.list_models())
    for name in ssl_zoo.list_pretrained():
        assert ssl_zoo.get_recipe(name).weights.published


def test_unknown_recipe_suggests_close_names():
    with pytest.raises(KeyError, match="Did you mean moco_v2_r18_digits"):
        ssl_zoo.get_recipe("moco_v2_r18_digts")
    with pytest.raises(KeyError, match="Did you mean leoclr_r50_in1k"):
        ssl_zoo.create_model("leoclr_r50_inlk")


def test_register_user_recipe_in_one_call(monkeypatch):
    from ssl_zoo.recipe import _RECIPES

    # the registry is process-wide: the recipe leaves with this test (later tests list every recipe)
    monkeypatch.setattr(_RECIPES, "_items", dict(_RECIPES._items))
    recipe = ssl_zoo.register_recipe(Recipe(
        name="my_moco_test_resnet", method="moco_v2", method_args={"queue_size": 64},
        backbone=BackboneCfg("test_resnet"), augment=AugmentCfg(image_size=32), dataset="digits",
        train=TrainCfg(epochs=1, batch_size=8)))
    assert "my_moco_test_resnet" in ssl_zoo.list_models("my_*")
    assert ssl_zoo.get_recipe("my_moco_test_resnet") is recipe
    with pytest.raises(ValueError, match="already registered"):
        ssl_zoo.register_recipe(recipe)
    method = ssl_zoo.create_method("my_moco_test_resnet")
    assert method.queue.shape == (64, 128)


def test_overrides_reach_every_section_and_are_validated():
    r = ssl_zoo.get_recipe("moco_v2_r18_digits")
    r2 = r.with_overrides(epochs=3, arch="test_resnet", image_size=48, queue_size=32, dataset="imagefolder",
                          train={"batch_size": 16})
    assert (r2.train.epochs, r2.backbone.arch, r2.augment.image_size, r2.method_args["queue_size"],
            r2.dataset, r2.train.batch_size) == (3, "test_resnet", 48, 32, "imagefolder", 16)
    assert r.train.epochs != 3  # the registered recipe is untouched (frozen)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.name = "x"
    with pytest.raises(ValueError, match="Did you mean epochs"):
        r.with_overrides(epoch=3)
    with pytest.raises(TypeError, match="expects int"):
        r.with_overrides(epochs="3")
    with pytest.raises(TypeError, match="queue_size"):
        r.with_overrides(queue_size=0.5)
    with pytest.raises(ValueError, match="no argument 'queue_sz'"):
        r.with_overrides(method_args={"queue_sz": 3})
    assert r.with_overrides(base_lr=1).train.base_lr == 1  # an int is a fine float


def test_recipe_round_trips_through_a_dict():
    r = ssl_zoo.get_recipe("moco_v2_r18_digits")
    assert Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError, match="Unknown TrainCfg"):
        Recipe.from_dict({**r.to_dict(), "train": {"epochz": 1}})


def test_create_model_is_a_timm_encoder_with_pretrained_cfg():
    enc = ssl_zoo.create_model("moco_v2_r18_digits")
    assert isinstance(enc, timm.models.ResNet)
    assert enc.num_features == 512
    assert enc(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert enc.pretrained_cfg["tag"] == "moco_v2_r18_digits"
    assert enc.pretrained_cfg["input_size"] == (3, 32, 32)
    clf = ssl_zoo.create_model("moco_v2_r18_digits", num_classes=7)
    assert clf(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    # same keys as plain timm, so exported weights load strictly into timm
    ref = timm.create_model("resnet18", num_classes=0, zero_init_last=False)
    assert enc.state_dict().keys() == ref.state_dict().keys()


def test_create_method_returns_loss_dict():
    method = ssl_zoo.create_method("moco_v2_r18_digits", arch="test_resnet", queue_size=32)
    out = method([torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)])
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert method.recipe.name == "moco_v2_r18_digits"


def test_unknown_backbone_and_init_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="timm does not know"):
        ssl_zoo.create_model("moco_v2_r18_digits", arch="resnet_does_not_exist")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ssl_zoo.create_method("moco_v2_r18_digits", init=str(tmp_path / "missing.safetensors"))


def test_init_from_local_safetensors(tmp_path):
    from safetensors.torch import save_file
    src = timm.create_model("test_resnet", num_classes=10)  # a supervised checkpoint: its fc is dropped
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    method = ssl_zoo.create_method("moco_v2_r18_digits", arch="test_resnet", model_args={},
                                   init=str(tmp_path / "w.safetensors"))
    got = method.encoder.state_dict()
    for key, value in src.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(got[key], value), key
    # the momentum copy starts from the same initialisation
    assert torch.equal(method.key_encoder.state_dict()["conv1.0.weight"], src.state_dict()["conv1.0.weight"])


def test_weights_cfg_published_flag():
    assert not WeightsCfg().published
    assert WeightsCfg(hf_hub_id="org/x").published


def test_every_registered_recipe_round_trips_and_builds_its_method_class():
    from ssl_zoo.methods import get_method_class, method_parameters
    for name in ssl_zoo.list_models():
        r = ssl_zoo.get_recipe(name)
        assert Recipe.from_dict(r.to_dict()) == r, name  # lists in method_args must not break --resume
        get_method_class(r.method)
        assert set(r.method_args) <= set(method_parameters(r.method)), name


def test_stl10_recipes_pretrain_on_the_unlabelled_split():
    assert ssl_zoo.get_recipe("leoclr_r18_stl10").train_split == "train+unlabeled"
    assert ssl_zoo.get_recipe("moco_v2_r18_stl10").train_split == "train+unlabeled"
    assert ssl_zoo.get_recipe("moco_v2_r18_digits").train_split == "train"


def test_exported_files_are_world_readable(tmp_path):
    import os
    import stat

    from ssl_zoo.export import save_encoder
    enc = ssl_zoo.create_model("moco_v2_r18_digits", arch="test_resnet", model_args={})
    out = save_encoder(enc, tmp_path / "m", ssl_zoo.get_recipe("moco_v2_r18_digits").with_overrides(
        arch="test_resnet", model_args={}))
    umask = os.umask(0)
    os.umask(umask)
    for f in ("model.safetensors", "config.json"):
        assert stat.S_IMODE((out / f).stat().st_mode) == 0o666 & ~umask


def test_list_and_tuple_method_args_are_interchangeable():
    r = ssl_zoo.get_recipe("moco_v2_synth_r18_digits").with_overrides(decoder_channels=[8, 8, 8, 8, 8])
    assert r.method_args["decoder_channels"] == (8, 8, 8, 8, 8)
    assert Recipe.from_dict(r.to_dict()) == r
