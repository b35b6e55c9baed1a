"""Each published layout, built as a tiny fixture on the fly, read through create_dataset."""
from __future__ import annotations

import csv
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_zoo.data import DatasetLayoutError, create_dataset, dataset_layout
from ssl_zoo.data.folder import imagenet100_classes


def _img_bytes(fmt: str = "JPEG", color=(200, 30, 30), size=(12, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


JPG = _img_bytes()
PPM = _img_bytes("PPM")


def _write(path: Path, data: bytes = JPG) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _assert_rgb_sample(ds, i: int = 0) -> None:
    image, label = ds[i]
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert label == ds.targets[i]


# ---------------------------------------------------------------- CUB-200-2011
def make_cub(root: Path) -> Path:
    base = root / "CUB_200_2011"
    names = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    images, labels, split = [], [], []
    image_id = 0
    for c, cname in enumerate(names, 1):
        for k in range(3):  # 2 train, 1 test per class
            image_id += 1
            rel = f"{cname}/{cname.split('.')[1]}_{k}.jpg"
            _write(base / "images" / rel)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {1 if k < 2 else 0}")
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "classes.txt").write_text("\n".join(f"{i} {n}" for i, n in enumerate(names, 1)) + "\n")
    return base


def test_cub_splits_labels_and_root_forms(tmp_path):
    base = make_cub(tmp_path)
    train = create_dataset("cub200", tmp_path, "train")
    test = create_dataset("cub200", base, "test")  # the CUB_200_2011 folder itself works too
    assert (len(train), len(test)) == (6, 3)
    assert train.classes == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    assert train.targets == [0, 0, 1, 1, 2, 2] and test.targets == [0, 1, 2]
    assert all("_2.jpg" in p for p in test.paths)
    _assert_rgb_sample(train)


def test_cub_missing_image_names_file(tmp_path):
    base = make_cub(tmp_path)
    victim = next((base / "images").rglob("*_1.jpg"))
    victim.unlink()
    with pytest.raises(DatasetLayoutError, match=victim.name) as err:
        create_dataset("cub200", tmp_path)
    assert "image_class_labels.txt" in str(err.value)  # the expected layout is printed


# ---------------------------------------------------------------- Stanford Cars
def make_cars(root: Path) -> None:
    import scipy.io as sio

    base = root / "stanford_cars"
    dt = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    names = np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi R8 Coupe 2012"], dtype=object)
    (base / "devkit").mkdir(parents=True)
    sio.savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    for folder, mat, per_class in [("cars_train", base / "devkit" / "cars_train_annos.mat", 2),
                                   ("cars_test", base / "cars_test_annos_withlabels.mat", 1)]:
        rows = []
        for c in range(1, 4):
            for _ in range(per_class):
                fname = f"{len(rows) + 1:05d}.jpg"
                _write(base / folder / fname)
                rows.append((1, 1, 5, 5, c, fname))
        sio.savemat(mat, {"annotations": np.array(rows, dtype=dt)})


def test_stanford_cars(tmp_path):
    make_cars(tmp_path)
    train = create_dataset("stanford_cars", tmp_path, "train")
    test = create_dataset("stanford_cars", tmp_path / "stanford_cars", "test")
    assert (len(train), len(test)) == (6, 3)
    assert train.classes[0] == "AM General Hummer SUV 2000" and len(train.classes) == 3
    assert train.targets == [0, 0, 1, 1, 2, 2] and test.targets == [0, 1, 2]
    _assert_rgb_sample(test)
    (tmp_path / "stanford_cars" / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(DatasetLayoutError, match="cars_test_annos_withlabels.mat"):
        create_dataset("stanford_cars", tmp_path, "test")


# ---------------------------------------------------------------- FGVC-Aircraft
def make_aircraft(root: Path) -> None:
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "A300B4", "Cessna 172"]
    (data / "images").mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    n = 1000000
    for split, per_class in [("train", 1), ("val", 1), ("test", 1)]:
        lines = []
        for v in variants:
            for _ in range(per_class):
                n += 1
                _write(data / "images" / f"{n}.jpg")
                lines.append(f"{n} {v}")
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    trainval = (data / "images_variant_train.txt").read_text() + (data / "images_variant_val.txt").read_text()
    (data / "images_variant_trainval.txt").write_text(trainval)


def test_aircraft_train_is_trainval(tmp_path):
    make_aircraft(tmp_path)
    train = create_dataset("aircraft", tmp_path, "train")
    assert len(train) == 6 and train.classes == ["707-320", "A300B4", "Cessna 172"]
    assert sorted(train.targets) == [0, 0, 1, 1, 2, 2]
    assert len(create_dataset("aircraft", tmp_path, "test")) == 3
    assert len(create_dataset("aircraft", tmp_path, "train_only")) == 3
    _assert_rgb_sample(train, 5)


# ---------------------------------------------------------------- GTSRB
def make_gtsrb(root: Path) -> None:
    base = root / "gtsrb"
    rows = []
    for c in range(43):
        for k in range(2 if c < 2 else 1):
            _write(base / "GTSRB" / "Training" / f"{c:05d}" / f"{c:05d}_{k:05d}.ppm", PPM)
        name = f"{c:05d}.ppm"
        _write(base / "GTSRB" / "Final_Test" / "Images" / name, PPM)
        rows.append([name, 12, 10, 1, 1, 11, 9, (c * 7) % 43])  # test labels come from the CSV, not names
    with open(base / "GT-final_test.csv", "w", newline="") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"])
        w.writerows(rows)


def test_gtsrb(tmp_path):
    make_gtsrb(tmp_path)
    train = create_dataset("gtsrb", tmp_path, "train")
    test = create_dataset("gtsrb", tmp_path, "test")
    assert len(train) == 45 and len(test) == 43 and len(train.classes) == 43
    assert train.targets[:3] == [0, 0, 1] and train.targets[-1] == 42
    assert test.targets[1] == 7
    _assert_rgb_sample(train)
    # a missing class folder is reported, not silently shifting every later label
    for f in (tmp_path / "gtsrb" / "GTSRB" / "Training" / "00005").iterdir():
        f.unlink()
    (tmp_path / "gtsrb" / "GTSRB" / "Training" / "00005").rmdir()
    with pytest.raises(DatasetLayoutError, match="00005"):
        create_dataset("gtsrb", tmp_path, "train")


# ---------------------------------------------------------------- ISIC 2017
def make_isic(root: Path) -> None:
    for prefix, n in [("ISIC-2017_Training", 6), ("ISIC-2017_Validation", 3), ("ISIC-2017_Test_v2", 3)]:
        with open(root / f"{prefix}_Part3_GroundTruth.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image_id", "melanoma", "seborrheic_keratosis"])
            for i in range(n):
                iid = f"ISIC_{hash(prefix) % 1000:03d}{i:04d}"
                _write(root / f"{prefix}_Data" / f"{iid}.jpg")
                w.writerow([iid, "1.0" if i % 3 == 0 else "0.0", "1.0" if i % 3 == 1 else "0.0"])


def test_isic2017(tmp_path):
    make_isic(tmp_path)
    train = create_dataset("isic2017", tmp_path, "train")
    assert train.classes == ["melanoma", "seborrheic keratosis", "nevus"]
    assert train.targets == [0, 1, 2, 0, 1, 2]
    assert len(create_dataset("isic2017", tmp_path, "val")) == 3
    assert len(create_dataset("isic2017", tmp_path, "test")) == 3
    _assert_rgb_sample(train, 2)
    gt = tmp_path / "ISIC-2017_Test_v2_Part3_GroundTruth.csv"
    gt.write_text(gt.read_text().replace("seborrheic_keratosis", "sk"))
    with pytest.raises(DatasetLayoutError, match="seborrheic_keratosis"):
        create_dataset("isic2017", tmp_path, "test")


# ---------------------------------------------------------------- CIFAR-10 / 100
def _cifar_rows(n: int, rng) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def make_cifar10(root: Path) -> Path:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for b in range(1, 6):
        with open(base / f"data_batch_{b}", "wb") as f:
            pickle.dump({"data": _cifar_rows(10, rng), "labels": list(range(10))}, f)
    with open(base / "test_batch", "wb") as f:
        pickle.dump({"data": _cifar_rows(10, rng), "labels": list(range(10))}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"]}, f)
    return base


def test_cifar10_reads_python_batches(tmp_path):
    base = make_cifar10(tmp_path)
    train = create_dataset("cifar10", tmp_path, "train", verify_checksums=False)
    test = create_dataset("cifar10", base, "test", verify_checksums=False)
    assert (len(train), len(test)) == (50, 10) and train.classes[1] == "automobile"
    with open(base / "data_batch_1", "rb") as f:
        row = pickle.load(f)["data"][3]
    image, label = train[3]
    assert label == 3 and image.size == (32, 32)
    # CIFAR rows are channel-planar: R plane, G plane, B plane
    assert np.array_equal(np.asarray(image), row.reshape(3, 32, 32).transpose(1, 2, 0))
    with pytest.raises(DatasetLayoutError, match="verify_checksums=False"):
        create_dataset("cifar10", tmp_path, "train")  # fixture files are not the official archive


class _RunsCode:
    """A pickle payload that, if unpickled with plain pickle.load, writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


@pytest.mark.parametrize("verify", [True, False])
def test_a_crafted_cifar_pickle_cannot_run_code(tmp_path, verify):
    base = make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    with open(base / "data_batch_2", "wb") as f:
        pickle.dump({"data": _RunsCode(marker), "labels": list(range(10))}, f)
    with pytest.raises(DatasetLayoutError):
        create_dataset("cifar10", tmp_path, "train", verify_checksums=verify)
    assert not marker.exists()


def test_cifar100_fine_labels(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    rng = np.random.default_rng(1)
    for split, n in [("train", 200), ("test", 100)]:
        with open(base / split, "wb") as f:
            pickle.dump({"data": _cifar_rows(n, rng), "fine_labels": [i % 100 for i in range(n)],
                         "coarse_labels": [i % 20 for i in range(n)]}, f)
    with open(base / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []}, f)
    train = create_dataset("cifar100", tmp_path, "train", verify_checksums=False)
    assert len(train) == 200 and len(train.classes) == 100 and train.targets[:3] == [0, 1, 2]


# ---------------------------------------------------------------- STL-10
def make_stl10(root: Path) -> Path:
    base = root / "stl10_binary"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem, n in [("train", 20), ("test", 10), ("unlabeled", 5)]:
        rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8).tofile(base / f"{stem}_X.bin")
        if stem != "unlabeled":
            (np.arange(n, dtype=np.uint8) % 10 + 1).tofile(base / f"{stem}_y.bin")  # labels are 1..10 on disk
    (base / "class_names.txt").write_text("\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse",
                                                     "monkey", "ship", "truck"]) + "\n")
    return base


def test_stl10_splits(tmp_path):
    make_stl10(tmp_path)
    kw = dict(verify_checksums=False)
    train = create_dataset("stl10", tmp_path, "train", **kw)
    assert len(train) == 20 and train.targets[:3] == [0, 1, 2] and train.classes[7] == "monkey"
    assert train[0][0].size == (96, 96)
    unlabeled = create_dataset("stl10", tmp_path, "unlabeled", **kw)
    assert len(unlabeled) == 5 and set(unlabeled.targets) == {-1}
    both = create_dataset("stl10", tmp_path, "train+unlabeled", **kw)
    assert len(both) == 25 and both.targets.count(-1) == 5
    assert len(create_dataset("stl10", tmp_path, "test", **kw)) == 10
    with pytest.raises(ValueError, match="unlabelled"):
        create_dataset("stl10", tmp_path, "train+unlabeled", label_fraction=0.5, **kw)


# ---------------------------------------------------------------- ImageNet-1k / ImageNet-100 / imagefolder
def _class_folders(folder: Path, names, per_class: int = 1) -> None:
    for n in names:
        for k in range(per_class):
            _write(folder / n / f"{n}_{k}.JPEG")


def test_imagenet1k_and_imagenet100(tmp_path):
    wnids = sorted(set(imagenet100_classes()) | {f"n{9000000 + i:08d}" for i in range(900)})
    assert len(wnids) == 1000
    for split in ("train", "val"):
        _class_folders(tmp_path / split, wnids)
    in1k = create_dataset("imagenet1k", tmp_path, "train")
    assert len(in1k) == 1000 and in1k.classes == wnids
    assert len(create_dataset("imagenet1k", tmp_path, "test")) == 1000  # "test" reads val/
    in100 = create_dataset("imagenet100", tmp_path, "val")
    assert len(in100) == 100 and in100.classes == sorted(imagenet100_classes())
    assert all(Path(p).parent.name == in100.classes[t] for p, t in in100.samples)
    # a 999-class root is not ImageNet-1k
    for f in (tmp_path / "train" / wnids[-1]).iterdir():
        f.unlink()
    (tmp_path / "train" / wnids[-1]).rmdir()
    with pytest.raises(DatasetLayoutError, match="999 class folders"):
        create_dataset("imagenet1k", tmp_path, "train")


def test_imagenet100_reports_missing_wnids(tmp_path):
    wanted = imagenet100_classes()
    _class_folders(tmp_path / "train", wanted[:-1])
    with pytest.raises(DatasetLayoutError, match=wanted[-1]):
        create_dataset("imagenet100", tmp_path, "train")


def test_imagenet_flat_val_explained(tmp_path):
    _class_folders(tmp_path / "train", ["n01440764"])
    _write(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DatasetLayoutError, match="valprep"):
        create_dataset("imagenet1k", tmp_path, "val")


def test_imagefolder_flat_and_split_roots(tmp_path):
    flat = tmp_path / "flat"
    _class_folders(flat, ["cat", "dog"], per_class=2)
    _write(flat / "dog" / "extra.png", _img_bytes("PNG"))
    (flat / "dog" / "notes.txt").write_text("not an image")
    ds = create_dataset("imagefolder", flat)
    assert ds.classes == ["cat", "dog"] and ds.targets == [0, 0, 1, 1, 1]
    with pytest.raises(DatasetLayoutError, match="test"):
        create_dataset("imagefolder", flat, "test")
    split_root = tmp_path / "split"
    _class_folders(split_root / "train", ["a", "b"], 2)
    _class_folders(split_root / "val", ["a", "b"], 1)
    assert len(create_dataset("imagefolder", split_root, "train")) == 4
    assert len(create_dataset("imagefolder", split_root, "test")) == 2  # test falls back to val/


def test_imagefolder_empty_class_named(tmp_path):
    _class_folders(tmp_path, ["full"], 1)
    (tmp_path / "empty_one").mkdir()
    with pytest.raises(DatasetLayoutError, match="empty_one"):
        create_dataset("imagefolder", tmp_path)


@pytest.mark.parametrize("name", ["cub200", "stanford_cars", "aircraft", "gtsrb", "isic2017", "cifar10", "cifar100",
                                  "stl10", "imagenet1k", "imagenet100", "imagefolder"])
def test_missing_root_names_path_and_layout(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetLayoutError) as err:
        create_dataset(name, missing)
    msg = str(err.value)
    assert str(missing) in msg and "does not exist" in msg
    assert dataset_layout(name).strip().splitlines()[1].strip() in msg
    with pytest.raises(DatasetLayoutError, match="no root folder"):
        create_dataset(name, None)


@pytest.mark.parametrize("name", ["cub200", "stanford_cars", "aircraft", "gtsrb", "isic2017", "cifar10", "stl10",
                                  "imagenet1k"])
def test_wrong_layout_is_explained(tmp_path, name):
    _class_folders(tmp_path, ["some_class"], 1)  # an image folder is not any of these layouts
    with pytest.raises(DatasetLayoutError, match="Expected layout") as err:
        create_dataset(name, tmp_path)
    assert str(tmp_path) in str(err.value)
