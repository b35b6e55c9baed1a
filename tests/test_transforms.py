"""View transforms: shapes, determinism, randomness, LeOCLR's uncropped original, MultiViewTransform."""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_zoo.recipe import AUGMENT_PRESETS, AugmentCfg
from ssl_zoo.transforms import MultiViewTransform, build_multiview_transform, build_view_transform

CFG = AugmentCfg(image_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
NO_COLOUR = dataclasses.replace(CFG, color_jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, hflip_p=0.0)
CORNERS = {"tl": (255, 0, 0), "tr": (0, 255, 0), "bl": (0, 0, 255), "br": (255, 255, 0)}


def noise_image(h=48, w=40, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def marked_corners(size=64, patch=8):
    """Grey image whose four corners carry distinct colour patches."""
    a = np.full((size, size, 3), 128, dtype=np.uint8)
    a[:patch, :patch], a[:patch, -patch:] = CORNERS["tl"], CORNERS["tr"]
    a[-patch:, :patch], a[-patch:, -patch:] = CORNERS["bl"], CORNERS["br"]
    return Image.fromarray(a)


def corner_colours(t: torch.Tensor) -> set:
    px = [t[:, 0, 0], t[:, 0, -1], t[:, -1, 0], t[:, -1, -1]]
    return {tuple(int(round(float(v) * 255)) for v in p) for p in px}


@pytest.mark.parametrize("view", ["crop", "original", "plain", "eval"])
def test_every_view_is_a_normalised_float_tensor_of_the_training_size(view):
    out = build_view_transform(view, CFG)(noise_image())
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0  # mean 0 / std 1: values stay in [0, 1]


def test_normalisation_uses_the_config():
    cfg = dataclasses.replace(NO_COLOUR, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    white = Image.new("RGB", (20, 20), (255, 255, 255))
    assert torch.allclose(build_view_transform("plain", cfg)(white), torch.full((3, 32, 32), 2.0))


def test_plain_and_eval_are_deterministic_crop_is_random():
    img = noise_image()
    for view in ("plain", "eval"):
        t = build_view_transform(view, CFG)
        assert torch.equal(t(img), t(img))
    crop = build_view_transform("crop", NO_COLOUR)
    outs = [crop(img) for _ in range(4)]
    assert not all(torch.equal(outs[0], o) for o in outs[1:])


def test_original_view_contains_the_whole_image():
    original = build_view_transform("original", NO_COLOUR)
    for _ in range(10):
        assert corner_colours(original(marked_corners())) == set(CORNERS.values())
    # with flips the corners swap places but all four survive
    flipped = build_view_transform("original", dataclasses.replace(NO_COLOUR, hflip_p=1.0))(marked_corners())
    assert corner_colours(flipped) == set(CORNERS.values())
    assert tuple(int(round(float(v) * 255)) for v in flipped[:, 0, 0]) == CORNERS["tr"]


def test_crop_view_does_lose_corners():
    # The same check detects a cropping transform, so the test above is not vacuous.
    crop = build_view_transform("crop", dataclasses.replace(NO_COLOUR, crop_scale=(0.2, 0.4)))
    assert any(corner_colours(crop(marked_corners())) != set(CORNERS.values()) for _ in range(10))


def test_eval_is_resize_then_centre_crop():
    # 64 px image, size 32, crop_pct 0.5: resize to 64 (a no-op), keep the central 32 x 32.
    img = marked_corners()
    out = build_view_transform("eval", NO_COLOUR, crop_pct=0.5)(img)
    expected = torch.from_numpy(np.array(img)[16:48, 16:48]).permute(2, 0, 1).float() / 255
    assert torch.allclose(out, expected)


def test_unknown_view_names_the_known_ones():
    with pytest.raises(ValueError, match="known views: crop, original, plain, eval"):
        build_view_transform("centre", CFG)


def test_multiview_transform_returns_views_in_order():
    mv = build_multiview_transform(("original", "crop", "crop"), NO_COLOUR)
    assert isinstance(mv, MultiViewTransform) and len(mv.transforms) == 3
    assert mv.transforms[1] is mv.transforms[2]  # same recipe, independent random draws per call
    views = mv(marked_corners())
    assert len(views) == 3 and all(v.shape == (3, 32, 32) for v in views)
    assert corner_colours(views[0]) == set(CORNERS.values())
    assert not torch.equal(views[1], views[2])
    plain = MultiViewTransform([build_view_transform("plain", CFG), build_view_transform("eval", CFG)])
    a, b = plain(noise_image())
    assert torch.equal(a, build_view_transform("plain", CFG)(noise_image()))
    assert torch.equal(b, build_view_transform("eval", CFG)(noise_image()))


@pytest.mark.parametrize("preset", sorted(AUGMENT_PRESETS))
def test_each_augmentation_preset_builds_the_views_it_names(preset):
    """`--set augment_preset=NAME` (LeOCLR Fig. 4 ablations): the crop view holds exactly the named operations."""
    from PIL import Image
    from torchvision.transforms import v2

    from ssl_zoo.recipe import AugmentCfg
    from ssl_zoo.transforms import build_view_transform

    cfg = AugmentCfg(image_size=32, augment_preset=preset)
    ops = build_view_transform("crop", cfg).transforms
    inner = [type(op.transforms[0]).__name__ if isinstance(op, v2.RandomApply) else type(op).__name__ for op in ops]
    names = {"RandomResizedCrop": "crop", "ColorJitter": "color", "RandomGrayscale": "grayscale",
             "GaussianBlur": "blur", "RandomHorizontalFlip": "flip"}
    assert {names[n] for n in inner if n in names} == set(AUGMENT_PRESETS[preset])
    if "crop" not in AUGMENT_PRESETS[preset]:
        assert "Resize" in inner  # the whole image, resized
    view = build_view_transform("crop", cfg)(Image.new("RGB", (40, 30)))
    assert view.shape == (3, 32, 32)


def test_unknown_preset_is_refused_with_the_names():
    import ssl_zoo

    with pytest.raises(ValueError, match="crop_only"):
        ssl_zoo.get_recipe("moco_v2_r18_digits").with_overrides(augment_preset="no_such")
