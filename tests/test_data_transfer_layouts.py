"""Oxford-IIIT Pets and Birdsnap (LeOCLR Table 3 transfer datasets), built as tiny fixtures of their
published layouts and read through create_dataset; bad layouts give DatasetLayoutError naming the problem."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from ssl_zoo.data import DatasetLayoutError, create_dataset, dataset_layout, list_datasets


def _jpg(path: Path, color=(20, 120, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (10, 8), color).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue())


# ------------------------------------------------------------------------------ Oxford-IIIT Pets
PETS = [("Abyssinian", 1, 1), ("american_bulldog", 2, 2), ("Bengal", 3, 1)]


def make_pets(root: Path) -> Path:
    base = root / "oxford-iiit-pet"
    train, test = [], []
    for name, class_id, species in PETS:
        for k in range(1, 4):  # 2 trainval, 1 test per breed
            _jpg(base / "images" / f"{name}_{k}.jpg")
            (train if k < 3 else test).append(f"{name}_{k} {class_id} {species} {class_id}")
    (base / "annotations").mkdir(parents=True)
    (base / "annotations" / "trainval.txt").write_text("\n".join(train) + "\n")
    (base / "annotations" / "test.txt").write_text("\n".join(test) + "\n")
    return base


def test_pets_splits_classes_and_root_forms(tmp_path):
    base = make_pets(tmp_path)
    train = create_dataset("oxford_pets", tmp_path, "train")
    test = create_dataset("oxford_pets", base, "test")  # the oxford-iiit-pet folder itself works too
    assert (len(train), len(test)) == (6, 3)
    assert train.classes == ["Abyssinian", "American Bulldog", "Bengal"]  # torchvision's names
    assert train.targets == [0, 0, 1, 1, 2, 2] and test.targets == [0, 1, 2]
    assert [Path(p).name for p in test.paths] == ["Abyssinian_3.jpg", "american_bulldog_3.jpg", "Bengal_3.jpg"]
    image, label = train[2]
    assert image.mode == "RGB" and label == 1
    assert "oxford_pets" in list_datasets() and "trainval.txt" in dataset_layout("oxford_pets")


def test_pets_bad_layouts(tmp_path):
    base = make_pets(tmp_path)
    (base / "images" / "Bengal_2.jpg").unlink()
    with pytest.raises(DatasetLayoutError, match="Bengal_2.jpg") as err:
        create_dataset("oxford_pets", tmp_path)
    assert "annotations/trainval.txt" in str(err.value)  # the expected layout is printed
    (base / "annotations" / "test.txt").write_text("Bengal_3 x 1 1\n")
    with pytest.raises(DatasetLayoutError, match="test.txt line 1"):
        create_dataset("oxford_pets", tmp_path, "test")
    (base / "annotations" / "test.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="test.txt"):
        create_dataset("oxford_pets", tmp_path, "test")
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        create_dataset("oxford_pets", tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------- Birdsnap
SPECIES = ["Acadian_Flycatcher", "Bald_Eagle", "Blue_Jay"]


def make_birdsnap(root: Path, image_dir: str = "images") -> Path:
    (root / "species.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "species.txt").write_text("id\tcommon\tscientific\tdir\n" + "".join(
        f"{i}\t{d.replace('_', ' ')}\tGenus species{i}\t{d}\n" for i, d in enumerate(SPECIES, 1)))
    rows, test = [], []
    n = 0
    for i, d in enumerate(SPECIES, 1):
        for k in range(3):  # 2 train, 1 test per species
            n += 1
            path = f"{d}/{n:04d}.jpg"
            _jpg(root / image_dir / path)
            rows.append(f"http://example.org/{n}.jpg\t{'0' * 32}\t{path}\t{i}\t1\t1\t5\t5")
            if k == 2:
                test.append(path)
    header = "url\tmd5\tpath\tspecies_id\tbb_x1\tbb_y1\tbb_x2\tbb_y2\n"
    (root / "images.txt").write_text(header + "\n".join(rows) + "\n")
    (root / "test_images.txt").write_text("path\n" + "\n".join(test) + "\n")
    return root


def test_birdsnap_splits_from_test_images_txt(tmp_path):
    make_birdsnap(tmp_path)
    train = create_dataset("birdsnap", tmp_path, "train")
    test = create_dataset("birdsnap", tmp_path, "test")
    assert (len(train), len(test)) == (6, 3)
    assert train.classes == SPECIES
    assert train.targets == [0, 0, 1, 1, 2, 2] and test.targets == [0, 1, 2]
    assert [Path(p).name for p in test.paths] == ["0003.jpg", "0006.jpg", "0009.jpg"]
    assert not set(train.paths) & set(test.paths)
    assert train[0][0].mode == "RGB" and train.num_missing == 0


def test_birdsnap_download_folder_and_missing_downloads(tmp_path):
    make_birdsnap(tmp_path, image_dir="download/images")  # get_birdsnap.py's default output folder
    (tmp_path / "download" / "images" / "Blue_Jay" / "0009.jpg").unlink()  # a dead URL
    with pytest.warns(RuntimeWarning, match="1 of 3 listed images"):
        test = create_dataset("birdsnap", tmp_path, "test")
    assert len(test) == 2 and test.num_missing == 1


def test_birdsnap_bad_layouts(tmp_path):
    make_birdsnap(tmp_path)
    (tmp_path / "test_images.txt").write_text("path\nBlue_Jay/9999.jpg\n")
    with pytest.raises(DatasetLayoutError, match="not in images.txt"):
        create_dataset("birdsnap", tmp_path, "test")
    (tmp_path / "images.txt").write_text("url\tfile\n")
    with pytest.raises(DatasetLayoutError, match="no column"):
        create_dataset("birdsnap", tmp_path)
    (tmp_path / "species.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="species.txt") as err:
        create_dataset("birdsnap", tmp_path)
    assert "get_birdsnap.py" in str(err.value)  # the expected layout is printed
    empty = tmp_path / "no_images"
    make_birdsnap(empty)
    import shutil

    shutil.rmtree(empty / "images")
    with pytest.raises(DatasetLayoutError, match="get_birdsnap.py to download"):
        create_dataset("birdsnap", empty)
