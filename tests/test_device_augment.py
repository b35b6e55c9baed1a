"""``--augment-on-device``: the batched photometric steps draw what the worker path draws, per image."""
import pytest
import torch
from torchvision.transforms.v2 import functional as F

from ssl_zoo.device_augment import DevicePhotometric, DeviceViewFinisher, PerImageColorJitter
from ssl_zoo.recipe import AugmentCfg
from ssl_zoo.transforms import build_multiview_transform, build_view_transform

TV_STEPS = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)


def _images(n=6, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def test_colour_jitter_equals_torchvision_per_image_with_each_images_own_order():
    images = _images()
    jitter = PerImageColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)
    g = torch.Generator().manual_seed(1)
    factors = torch.stack([torch.empty(6).uniform_(0.6, 1.4, generator=g) for _ in range(3)]
                          + [torch.empty(6).uniform_(-0.1, 0.1, generator=g)], dim=1)
    orders = torch.stack([torch.randperm(4, generator=g) for _ in range(6)])
    apply = torch.tensor([True, True, False, True, True, True])
    out = jitter(images, factors=factors, orders=orders, apply=apply)
    for i in range(6):
        want = images[i]
        if apply[i]:
            for step in orders[i].tolist():
                want = TV_STEPS[step](want, factors[i, step].item())
        torch.testing.assert_close(out[i], want, atol=2e-5, rtol=0)
    assert len({tuple(o) for o in orders.tolist()}) > 1  # the test really mixes orders in one batch


def test_drawn_factors_differ_per_image_and_respect_p():
    torch.manual_seed(0)
    jitter = PerImageColorJitter(0.4, 0.0, 0.0, 0.0, p=0.5)  # brightness only: out / in is the factor
    images = torch.full((4000, 3, 2, 2), 0.5)
    ratio = (jitter(images) / images)[:, 0, 0, 0]
    changed = (ratio - 1).abs() > 1e-6
    assert 0.45 < changed.float().mean() < 0.55
    assert ratio[changed].min() >= 0.6 - 1e-6 and ratio[changed].max() <= 1.4 + 1e-6
    assert ratio[changed].std() > 0.2  # uniform on [0.6, 1.4] has std 0.23: not one factor for the batch


def test_grayscale_and_blur_match_torchvision_when_forced():
    cfg = AugmentCfg(image_size=16, color_jitter_p=0.0, grayscale_p=1.0, blur_p=0.0, mean=(0, 0, 0), std=(1, 1, 1))
    images = (_images() * 255).round().to(torch.uint8)
    out = DevicePhotometric(cfg)(images)
    want = F.rgb_to_grayscale(images.float() / 255, num_output_channels=3)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)

    cfg = AugmentCfg(image_size=32, color_jitter_p=0.0, grayscale_p=0.0, blur_p=1.0, blur_sigma=(1.5, 1.5),
                     mean=(0, 0, 0), std=(1, 1, 1))
    x = _images(size=32)
    out = DevicePhotometric(cfg)(x)
    want = F.gaussian_blur(x, kernel_size=[3, 3], sigma=[1.5, 1.5])
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)


def test_finisher_normalises_and_only_augments_photometric_views():
    cfg = AugmentCfg(image_size=8, grayscale_p=1.0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    crop, plain = DeviceViewFinisher(["crop", "plain"], cfg)([images, images])
    torch.testing.assert_close(plain, (images.float() / 255 - 0.5) / 0.25)
    assert torch.allclose(crop[:, 0], crop[:, 1]) and torch.allclose(crop[:, 1], crop[:, 2])  # all grey


def test_worker_side_keeps_only_geometry_and_returns_uint8():
    cfg = AugmentCfg(image_size=8, hflip_p=1.0, crop_scale=(1.0, 1.0), grayscale_p=1.0, color_jitter_p=1.0)
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    view = build_view_transform("crop", cfg, photometric_on_device=True)(image)
    assert view.dtype == torch.uint8
    torch.testing.assert_close(view, image.flip(-1))  # flipped, not coloured or greyed
    views = build_multiview_transform(["crop", "plain"], cfg, photometric_on_device=True)(image)
    assert [v.dtype for v in views] == [torch.uint8, torch.uint8]
    with pytest.raises(ValueError, match="eval view"):
        build_view_transform("eval", cfg, photometric_on_device=True)
