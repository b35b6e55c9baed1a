"""create_dataset's shared behaviour: digits, label fractions, RGB conversion, unreadable files, loader, CLI."""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_zoo.data import (
    UnreadableImageError,
    build_train_loader,
    configure_parser,
    create_dataset,
    label_fraction_indices,
    list_datasets,
    run_cli,
    to_rgb,
)


def test_digits_default_dataset():
    train, test = create_dataset("digits"), create_dataset("digits", split="test")
    assert (len(train), len(test)) == (1257, 540)
    assert train.classes == [str(d) for d in range(10)]
    # stratified: every class keeps ~70% of its images in train
    counts = Counter(train.targets)
    both = Counter(train.targets + test.targets)
    assert all(abs(counts[c] / both[c] - 0.7) < 0.01 for c in range(10))
    image, label = train[0]
    arr = np.asarray(image)
    assert image.mode == "RGB" and image.size == (32, 32) and label == train.targets[0]
    assert arr.max() > 200 and arr.min() == 0 and np.array_equal(arr[..., 0], arr[..., 2])
    assert create_dataset("digits").targets == train.targets  # fixed split


def test_digits_is_the_real_sklearn_data():
    from sklearn.datasets import load_digits

    d = load_digits()
    train = create_dataset("digits")
    # the 8x8 scan survives the upsampling: block means follow the original pixel order
    img = np.asarray(train.load_rgb(0))[..., 0].astype(float)
    blocks = img.reshape(8, 4, 8, 4).mean(axis=(1, 3))
    match = [i for i in range(len(d.images)) if np.corrcoef(blocks.ravel(), d.images[i].ravel())[0, 1] > 0.97]
    assert match and d.target[match[0]] == train.targets[0]


def test_unknown_name_and_split_suggest():
    with pytest.raises(KeyError, match="Did you mean 'cifar10'"):
        create_dataset("cifar-10")
    with pytest.raises(ValueError, match="splits are: train, test"):
        create_dataset("digits", split="validation")
    assert {"digits", "imagefolder", "cub200", "stl10", "imagenet100"} <= set(list_datasets())


@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.2, 0.01])
def test_label_fraction_per_class(fraction):
    full = create_dataset("digits")
    part = create_dataset("digits", label_fraction=fraction, seed=3)
    full_counts, part_counts = Counter(full.targets), Counter(part.targets)
    for c, n in full_counts.items():
        assert part_counts[c] == max(1, int(np.floor(fraction * n + 0.5)))
    assert part.classes == full.classes


def test_label_fraction_deterministic_nested_and_seeded():
    t = [i % 4 for i in range(103)]
    a, b = label_fraction_indices(t, 0.2, seed=1), label_fraction_indices(t, 0.2, seed=1)
    assert a == b
    assert set(a) <= set(label_fraction_indices(t, 0.5, seed=1))
    assert a != label_fraction_indices(t, 0.2, seed=2)
    small = [0, 0, 0, 1]
    assert Counter(small[i] for i in label_fraction_indices(small, 0.1)) == {0: 1, 1: 1}
    with pytest.raises(ValueError, match="label_fraction"):
        create_dataset("digits", label_fraction=1.5)
    with pytest.raises(ValueError, match="label_fraction"):
        label_fraction_indices(t, 0.0)


def test_subset_images_follow_their_labels():
    full = create_dataset("digits")
    part = create_dataset("digits", label_fraction=0.1, seed=0)
    kept = label_fraction_indices(full.targets, 0.1, seed=0)
    assert np.array_equal(np.asarray(part[5][0]), np.asarray(full[kept[5]][0])) and part[5][1] == full.targets[kept[5]]


def _mode_image(mode: str) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray(np.array([[0, 32896, 65535, 65535]], dtype=np.uint16))
    if mode == "F":
        return Image.fromarray(np.array([[0.0, 0.5, 1.0, 1.0]], dtype=np.float32))
    return Image.new(mode, (4, 1))


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "YCbCr", "I;16", "I", "F", "RGBA", "LA"])
def test_to_rgb_every_mode(mode):
    out = to_rgb(_mode_image(mode))
    assert out.mode == "RGB" and out.size == (4, 1)


def test_to_rgb_values():
    sixteen = np.asarray(to_rgb(_mode_image("I;16")))[0, :, 0]
    assert sixteen.tolist() == [0, 128, 255, 255]  # rescaled, not clipped to white
    floats = np.asarray(to_rgb(_mode_image("F")))[0, :, 0]
    assert floats.tolist() == [0, 128, 255, 255]
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    assert np.asarray(to_rgb(rgba)).tolist() == [[[255, 255, 255], [10, 20, 30]]]  # transparent -> white
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))
    assert np.asarray(to_rgb(cmyk))[0, 0].tolist() == [255, 0, 0]


def _folder_with_modes(root: Path) -> Path:
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.new("L", (8, 8), 100).save(root / "a" / "gray.png")
    Image.new("RGBA", (8, 8), (1, 2, 3, 128)).save(root / "a" / "alpha.png")
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(root / "b" / "cmyk.jpg")
    Image.fromarray(np.full((8, 8), 60000, dtype=np.uint16)).save(root / "b" / "sixteen.png")
    return root


def test_files_in_odd_modes_load_as_rgb(tmp_path):
    ds = create_dataset("imagefolder", _folder_with_modes(tmp_path))
    images = [ds[i][0] for i in range(len(ds))]
    assert all(im.mode == "RGB" for im in images)
    by_name = {Path(p).name: np.asarray(im) for p, im in zip(ds.paths, images)}
    assert by_name["gray.png"][0, 0].tolist() == [100, 100, 100]
    assert by_name["sixteen.png"][0, 0].tolist() == [233, 233, 233]  # 60000 / 257
    assert by_name["cmyk.jpg"].min() > 240


def _folder_with_broken(root: Path) -> Path:
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (16, 16), (k * 100, 50, 50)).save(root / c / f"{k}.jpg")
    good = (root / "a" / "1.jpg").read_bytes()
    (root / "a" / "1.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (root / "b" / "0.jpg").write_bytes(b"this is not a jpeg")
    return root


def test_unreadable_image_raises_naming_the_file(tmp_path):
    ds = create_dataset("imagefolder", _folder_with_broken(tmp_path))
    assert ds[0][0].mode == "RGB"
    with pytest.raises(UnreadableImageError, match=r"a[/\\]1\.jpg.*on_error='skip'"):
        ds[1]
    with pytest.raises(UnreadableImageError, match=r"b[/\\]0\.jpg"):
        ds[2]


def test_unreadable_image_skip_and_count(tmp_path):
    ds = create_dataset("imagefolder", _folder_with_broken(tmp_path), on_error="skip")
    with pytest.warns(RuntimeWarning) as record:
        image, label = ds[1]
    messages = [str(w.message) for w in record]
    assert len(messages) == 2 and "1.jpg" in messages[0] and "0.jpg" in messages[1]
    assert label == 1 and image.mode == "RGB"  # both bad files skipped: b/1.jpg stands in
    assert ds.num_skipped == 2
    bad = ds.find_unreadable()
    assert sorted(Path(p).name for p, _ in bad) == ["0.jpg", "1.jpg"]
    with pytest.raises(ValueError, match="on_error"):
        create_dataset("digits", on_error="ignore")


def test_transform_is_applied():
    ds = create_dataset("digits", transform=lambda im: torch.tensor(np.asarray(im)).permute(2, 0, 1))
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8 and isinstance(y, int)


def _to_tensor(im):
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


def test_train_loader_workers_and_seeded_order():
    ds = create_dataset("digits", label_fraction=0.05, transform=_to_tensor)
    loader = build_train_loader(ds, batch_size=8, num_workers=1, seed=5)
    assert loader.persistent_workers and loader.drop_last
    assert loader.pin_memory == torch.cuda.is_available()
    x, y = next(iter(loader))
    assert x.shape == (8, 3, 32, 32) and y.shape == (8,)
    first = [b[1].tolist() for b in build_train_loader(ds, batch_size=8, seed=5)]
    again = [b[1].tolist() for b in build_train_loader(ds, batch_size=8, seed=5)]
    other = [b[1].tolist() for b in build_train_loader(ds, batch_size=8, seed=6)]
    assert first == again and first != other and len(first) == len(ds) // 8
    with pytest.raises(ValueError, match="fewer than one batch"):
        build_train_loader(ds, batch_size=len(ds) + 1)


def _cli(argv):
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return run_cli(parser.parse_args(argv))


def test_cli_lists_every_dataset_with_layout(capsys):
    assert _cli([]) == 0
    out = capsys.readouterr().out
    for name in list_datasets():
        assert f"\n{name}  [splits:" in "\n" + out
    assert "image_class_labels.txt" in out and "ISIC-2017_Training_Part3_GroundTruth.csv" in out


def test_cli_inspects_and_checks_a_folder(tmp_path, capsys):
    root = _folder_with_broken(tmp_path)
    assert _cli(["imagefolder", "--data", str(root), "--split", "train"]) == 0
    assert "[train] 4 images (4 labelled), 2 classes: a, b" in capsys.readouterr().out
    assert _cli(["imagefolder", "--data", str(root), "--split", "train", "--check"]) == 1
    out = capsys.readouterr().out
    assert "2 unreadable of 4" in out and "0.jpg" in out
    assert _cli(["cub200", "--data", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert _cli(["cub"]) == 2


def test_train_loader_with_sampler_and_generator():
    ds = create_dataset("digits", label_fraction=0.02, transform=_to_tensor)
    order = list(range(len(ds)))[::-1]
    g = torch.Generator()
    g.manual_seed(0)
    loader = build_train_loader(ds, batch_size=4, sampler=order, generator=g, drop_last=False)
    labels = torch.cat([y for _, y in loader]).tolist()
    assert labels == [ds.targets[i] for i in order] and loader.generator is g


def test_file_paths_survive_packing_and_subsets(tmp_path):
    for cls in ("é-accent", "with space"):
        (tmp_path / cls).mkdir()
        for k in range(3):
            Image.new("RGB", (4, 4), (k * 80, 0, 0)).save(tmp_path / cls / f"ö{k}.png")
    ds = create_dataset("imagefolder", tmp_path)
    assert ds.classes == ["with space", "é-accent"]  # sorted by code point, as ImageFolder
    assert [Path(p).relative_to(tmp_path).as_posix() for p in ds.paths][3:5] == ["é-accent/ö0.png", "é-accent/ö1.png"]
    part = ds.subset([5, 0])
    assert part.paths == [ds.paths[5], ds.paths[0]] and part.targets == [1, 0]
    assert np.asarray(part[0][0])[0, 0, 0] == 160


def test_digits_textures_is_a_frozen_64px_benchmark():
    """The embedded CPU benchmark (issue 14): digits on real photo/texture patches, identical for everyone."""
    from ssl_zoo.data.digits import digits_arrays
    from ssl_zoo.data.digits_textures import digits_textures_arrays

    images, labels, splits = digits_textures_arrays()
    again, _, _ = digits_textures_arrays.__wrapped__()  # regenerated from scratch: the same pixels
    assert images.shape == (1797, 64, 64, 3) and images.dtype == np.uint8 and np.array_equal(images, again)
    _, digit_labels, digit_splits = digits_arrays()
    assert np.array_equal(labels, digit_labels)
    assert all(np.array_equal(splits[s], digit_splits[s]) for s in ("train", "test"))
    assert images.reshape(len(images), -1).std(axis=1).min() > 5  # textured, not blank backgrounds
    train = create_dataset("digits_textures", split="train")
    assert len(train) == 1257 and train[0][0].size == (64, 64)


def test_photo_patches_is_a_frozen_balanced_benchmark_with_disjoint_train_and_test_regions():
    """Issue 14's CPU benchmark: the same pixels for everyone, balanced classes, no test pixel seen in training."""
    from ssl_zoo.data.photo_patches import PHOTOS, photo_patches_arrays

    images, labels, splits = photo_patches_arrays()
    again, again_labels, _ = photo_patches_arrays.__wrapped__()  # regenerated from scratch: the same pixels
    assert images.shape == (1800, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and np.array_equal(labels, again_labels)
    assert (images[..., 0] == images[..., 1]).all() and (images[..., 0] == images[..., 2]).all()  # grey
    assert [len(splits[s]) for s in ("train", "test")] == [1260, 540]
    assert not set(splits["train"]) & set(splits["test"])
    for split in ("train", "test"):
        assert np.bincount(labels[splits[split]], minlength=10).tolist() == [len(splits[split]) // 10] * 10
    # A pinned digest of the frozen pixels: any change to the generator (or to scikit-image's photos) shows here.
    import hashlib
    assert hashlib.sha256(images.tobytes()).hexdigest()[:16] == "74d56cf94ba79f5f"
    test = create_dataset("photo_patches", split="test")
    assert len(test) == 540 and test.classes == list(PHOTOS) and test[0][0].size == (32, 32)
    with pytest.raises(TypeError, match="no extra arguments"):
        create_dataset("photo_patches", split="train", download=True)


def test_photo_patches_images_are_their_boxes_and_test_boxes_lie_right_of_every_train_box():
    """Each image is its recorded box of its photo, resized; train boxes lie in each photo's left 65% of columns
    and test boxes in the right 35%, so no test pixel was seen in training."""
    from PIL import Image

    from ssl_zoo.data import photo_patches as pp

    images, labels, splits = pp.photo_patches_arrays()
    boxes, box_splits = pp.patch_boxes()
    photos = pp._grey_photos()
    assert np.array_equal(boxes[:, 0], labels)
    assert all(np.array_equal(splits[s], box_splits[s]) for s in splits)
    for index in (0, 7, 1259, 1260, 1799):
        label, top, left, side = boxes[index].tolist()
        cut = Image.fromarray(photos[label][top:top + side, left:left + side]).resize((32, 32), Image.BILINEAR)
        assert np.array_equal(np.asarray(cut), images[index, ..., 0])
    widths = np.array([photos[label].shape[1] for label in boxes[:, 0]])
    train_end = (0.65 * widths).astype(int)
    lefts, sides = boxes[:, 2], boxes[:, 3]
    train, test = splits["train"], splits["test"]
    assert (lefts[train] + sides[train] <= train_end[train]).all() and (lefts[test] >= train_end[test]).all()
    assert sides.min() >= pp.PATCH_SIDES[0] and sides.max() <= pp.PATCH_SIDES[1]
    assert len(set(sides.tolist())) > 20  # the scale really varies


def test_dataset_pilots_build_every_candidate_kind_and_the_chosen_one_is_photo_patches():
    """benchmarks/dataset_pilots.py (the pilots behind photo_patches) still builds what the notes report on."""
    from conftest import load_benchmark

    pilots = load_benchmark("dataset_pilots")
    for name, n_classes in (("colour_60", 10), ("grey", 10), ("palette_60", 10), ("noise_0_100_rgb", 10),
                            ("const_40_12_20", 10), ("fixbg_astronaut_14_24", 10), ("pairs_200_100_16", 100)):
        images, labels, splits = pilots.candidate(name)
        assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3), name
        assert len(np.unique(labels)) == n_classes and len(splits["train"]) + len(splits["test"]) == len(images)
    assert np.array_equal(pilots.candidate("palette_60")[0], pilots.candidate("palette_60")[0])  # seeded
    colour, _, _ = pilots.candidate("colour_60")
    assert colour.reshape(len(colour), -1, 3)[:, 0].std(axis=0).min() > 40  # backgrounds differ per image
    from ssl_zoo.data.photo_patches import photo_patches_arrays

    chosen, labels, splits = pilots.candidate("photo_16_48_g")
    frozen, frozen_labels, frozen_splits = photo_patches_arrays()
    assert np.array_equal(labels, frozen_labels) and all(np.array_equal(splits[s], frozen_splits[s]) for s in splits)
    assert np.abs(chosen.astype(int) - frozen.astype(int)).max() <= 1  # the pilot's grey conversion truncates
    with pytest.raises(SystemExit, match="unknown candidate"):
        pilots.candidate("sepia_3")
