"""`ssl-zoo embed` / `ssl_zoo.embed`: one row per readable image, the encoder's eval transform, the table, the
skipped list, no silent overwrite, and 2 processes == 1 process."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pictures_fixtures import make_class_tree, make_flat_folder
from test_evaluation_features import export_tiny_encoder

import ssl_zoo
from ssl_zoo.cli import main as cli_main
from ssl_zoo.embedding import list_images


@pytest.fixture(scope="module")
def flat(tmp_path_factory) -> Path:
    return make_flat_folder(tmp_path_factory.mktemp("flat"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_class_tree(tmp_path_factory.mktemp("tree"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return export_tiny_encoder(tmp_path_factory.mktemp("model"))  # test_resnet, 16 px eval size


def _reference(model_dir: str, folder: Path, paths: list[str]) -> torch.Tensor:
    """The features of plain code: the encoder on its eval transform of each image, one at a time."""
    from ssl_zoo.data import load_image
    from ssl_zoo.transforms import eval_transform

    encoder = ssl_zoo.create_model(f"local-dir:{model_dir}").eval()
    transform = eval_transform(encoder)
    with torch.no_grad():
        return torch.cat([encoder(transform(load_image(folder / p))[None]) for p in paths])


def _table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_list_images_reads_flat_folders_recursively_and_class_trees(flat: Path, tree: Path) -> None:
    paths, labels, classes = list_images(flat)
    assert len(paths) == 21 and labels is None and classes == []  # 20 images + broken.png, no notes.txt
    assert "more/img_03.png" in paths and "broken.png" in paths and paths == sorted(paths)
    paths, labels, classes = list_images(tree)
    assert classes == ["digit_0", "digit_1", "digit_2"] and len(paths) == 18
    assert labels == [0] * 6 + [1] * 6 + [2] * 6 and paths[6].startswith("digit_1/")


def test_embed_flat_folder_writes_one_row_per_readable_image(flat: Path, model_dir: str, tmp_path: Path,
                                                             capsys) -> None:
    from safetensors import safe_open

    out = tmp_path / "emb.safetensors"
    assert cli_main(["embed", "--model", model_dir, "--data", str(flat), "--output", str(out), "--batch-size", "4",
                     "--num-workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "skipped 1 unreadable image(s)" in printed and "broken.png" in printed
    with safe_open(str(out), "pt") as f:
        features = f.get_tensor("embeddings")
        assert "labels" not in f.keys() and f.metadata()["table"] == "emb.csv"
    rows = _table(tmp_path / "emb.csv")
    assert features.shape == (20, 96) and len(rows) == 20 and list(rows[0]) == ["row", "path"]
    assert "broken.png" not in [r["path"] for r in rows]
    assert (tmp_path / "emb.skipped.txt").read_text().startswith("broken.png\t")
    # each row is the encoder's output on that image through its eval transform (all modes and sizes)
    torch.testing.assert_close(features, _reference(model_dir, flat, [r["path"] for r in rows]),
                               rtol=1e-4, atol=1e-5)


def test_embed_class_tree_to_npy_with_labels(tree: Path, model_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "tree.npy"
    assert cli_main(["embed", "--model", model_dir, "--data", str(tree), "--output", str(out),
                     "--num-workers", "0"]) == 0
    features = np.load(out)
    rows = _table(tmp_path / "tree.csv")
    assert features.shape == (18, 96) and not (tmp_path / "tree.skipped.txt").exists()
    assert [r["class"] for r in rows[::6]] == ["digit_0", "digit_1", "digit_2"]
    assert [int(r["label"]) for r in rows] == [0] * 6 + [1] * 6 + [2] * 6
    torch.testing.assert_close(torch.from_numpy(features), _reference(model_dir, tree, [r["path"] for r in rows]),
                               rtol=1e-4, atol=1e-5)


def test_embed_parquet_table_holds_what_the_csv_holds(tree: Path, model_dir: str, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")  # in the test extra; an optional extra for users
    csv_out, pq_out = tmp_path / "a.npy", tmp_path / "b.npy"
    assert cli_main(["embed", "--model", model_dir, "--data", str(tree), "--output", str(csv_out),
                     "--num-workers", "0"]) == 0
    assert cli_main(["embed", "--model", model_dir, "--data", str(tree), "--output", str(pq_out),
                     "--table", str(tmp_path / "b.parquet"), "--num-workers", "0"]) == 0
    table = pq.read_table(tmp_path / "b.parquet").to_pylist()
    rows = _table(tmp_path / "a.csv")
    assert len(table) == 18 and [str(r["path"]) for r in table] == [r["path"] for r in rows]
    assert [r["label"] for r in table] == [int(r["label"]) for r in rows] and table[6]["class"] == "digit_1"
    np.testing.assert_allclose(np.load(pq_out), np.load(csv_out), rtol=1e-6)


def test_embed_never_overwrites_without_the_flag(tree: Path, model_dir: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "e.npy"
    out.write_bytes(b"precious")
    argv = ["embed", "--model", model_dir, "--data", str(tree), "--output", str(out), "--num-workers", "0"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1 and out.read_bytes() == b"precious"
    assert cli_main([*argv, "--overwrite"]) == 0 and np.load(out).shape == (18, 96)


@pytest.mark.parametrize("extra, message", [
    (["--output", "x.pt"], ".safetensors or .npy"),
    (["--output", "x.npy", "--table", "t.parquet"], "pyarrow"),
    (["--output", "x.npy", "--table", "t.json"], ".csv or .parquet"),
])
def test_embed_bad_outputs_are_one_line_errors(extra, message, tree: Path, model_dir: str, tmp_path: Path,
                                                 capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # not installed (an ImportError on import)
    assert cli_main(["embed", "--model", model_dir, "--data", str(tree), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_embed_missing_folder_is_a_one_line_error(model_dir: str, tmp_path: Path, capsys) -> None:
    assert cli_main(["embed", "--model", model_dir, "--data", str(tmp_path / "nope"), "--output",
                     str(tmp_path / "e.npy")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_python_api_returns_embeddings(tree: Path, model_dir: str) -> None:
    emb = ssl_zoo.embed(f"local-dir:{model_dir}", tree, batch_size=5, progress=False)
    assert emb.features.shape == (18, 96) and emb.labels is not None and emb.classes[2] == "digit_2"
    assert emb.skipped == [] and len(emb.paths) == 18


def test_two_processes_write_what_one_process_writes(flat: Path, model_dir: str, tmp_path: Path,
                                                     launch_two_cpu_processes) -> None:
    one, two = tmp_path / "one.npy", tmp_path / "two.npy"
    assert cli_main(["embed", "--model", model_dir, "--data", str(flat), "--output", str(one), "--batch-size", "6",
                     "--num-workers", "0"]) == 0
    proc = launch_two_cpu_processes(["-m", "ssl_zoo.cli", "embed", "--model", model_dir, "--data", str(flat),
                                     "--output", str(two), "--batch-size", "6", "--num-workers", "0"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("wrote ") == 1  # the main process writes and reports
    np.testing.assert_allclose(np.load(two), np.load(one), rtol=1e-5, atol=1e-6)
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "one.csv").read_text()
    assert (tmp_path / "two.skipped.txt").read_text() == (tmp_path / "one.skipped.txt").read_text()
