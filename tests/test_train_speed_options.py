"""``train(compile=...)`` and ``train(augment_on_device=True)``: speed options that keep the run what it was."""
from pathlib import Path

import pytest
import torch

from ssl_zoo.device_augment import DeviceViewFinisher
from ssl_zoo.errors import UserInputError
from ssl_zoo.train import train
from ssl_zoo.weights import read_state_dict

RECIPE = "moco_v2_r18_digits"
TINY = {"queue_size": 64, "arch": "test_resnet", "model_args": {}, "bn_group_size": 8}
RUN = dict(batch_size=16, num_workers=0, progress_bar=False, overrides=TINY, max_steps=2)


def test_augment_on_device_feeds_uint8_crops_to_the_device_and_float_views_to_the_method(tmp_path: Path,
                                                                                         monkeypatch) -> None:
    seen = []
    original = DeviceViewFinisher.forward

    def spy(self, views):
        out = original(self, views)
        seen.append(([v.dtype for v in views], [v.dtype for v in out], [float(v.mean()) for v in out]))
        return out

    monkeypatch.setattr(DeviceViewFinisher, "forward", spy)
    result = train(RECIPE, output=tmp_path / "run", augment_on_device=True, **RUN)
    assert result["step"] == 2 and Path(result["model"]).is_file()
    assert len(seen) == 2
    for inputs, outputs, means in seen:
        assert inputs == [torch.uint8, torch.uint8] and outputs == [torch.float32, torch.float32]
        assert all(-1.5 < m < 1.5 for m in means)  # normalised with the recipe's mean/std, not raw 0..255


def test_augment_on_device_refuses_a_callers_dataset(tmp_path: Path) -> None:
    dataset = [([torch.zeros(3, 32, 32), torch.zeros(3, 32, 32)], 0)] * 16
    with pytest.raises(UserInputError, match="augment-on-device"):
        train(RECIPE, output=tmp_path / "run", augment_on_device=True, dataset=dataset, **RUN)


def test_compiled_forward_takes_the_same_steps_and_exports_the_same_keys(tmp_path: Path) -> None:
    eager = train(RECIPE, output=tmp_path / "eager", **RUN)
    # aot_eager traces forward and backward through dynamo and AOTAutograd without generating C++: what
    # inductor compiles, at a test's cost.
    compiled = train(RECIPE, output=tmp_path / "compiled", compile="aot_eager", **RUN)
    assert compiled["final"]["loss"] == pytest.approx(eager["final"]["loss"], rel=1e-5, abs=1e-6)
    a, b = read_state_dict(eager["model"]), read_state_dict(compiled["model"])
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_cli_compile_flag_takes_no_value_and_names_its_backend_separately(monkeypatch) -> None:
    from ssl_zoo import train as train_module

    seen = {}
    monkeypatch.setattr(train_module, "train", lambda recipe, **kw: seen.update(recipe=recipe, **kw) or {
        "interrupted": False, "output": "x", "model": "x", "step": 0, "epoch": 0})
    train_module.main(["--compile", RECIPE, "--max-steps", "1"])
    assert seen["recipe"] == RECIPE and seen["compile"] == "inductor"
    train_module.main([RECIPE, "--compile", "--compile-backend", "aot_eager"])
    assert seen["compile"] == "aot_eager"
    train_module.main([RECIPE])
    assert seen["compile"] is False and seen["augment_on_device"] is False
