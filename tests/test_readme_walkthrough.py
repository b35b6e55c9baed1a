"""README's "Your own images" walkthrough, command by command, as written there: on a flat folder of 60 images
in mixed sizes, modes and formats (conftest.flat_image_folder) and a 5-class tree (conftest.class_tree_folder),
with a tiny backbone and 2 training steps. A command changed in README is the command tested."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
from PIL import Image

from ssl_zoo.cli import main as cli_main

README = Path(__file__).resolve().parents[1] / "README.md"
# what makes the walkthrough's training a 2-step smoke run; everything else is README's own words
TINY_TRAIN = ["--max-steps", "2", "--batch-size", "16", "--num-workers", "0", "--set", "arch=test_resnet",
              "--set", "model_args={}", "--set", "queue_size=32"]
NO_WORKERS = {"embed", "neighbors", "map", "eval"}


def walkthrough_commands() -> list[list[str]]:
    text = README.read_text()
    section = text[text.index("## Your own images"):]
    section = section[:section.index("\n## ", 3)]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "README's 'Your own images' section has no bash block"
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [shlex.split(line) for line in lines if line]


def test_the_walkthrough_covers_the_whole_journey() -> None:
    names = [argv[1] if argv[1] != "eval" else "eval " + argv[2] for argv in walkthrough_commands()]
    assert names == ["train", "plot", "embed", "neighbors", "map", "eval knn", "push"]


def _not_blank(path: Path) -> tuple[int, int]:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 3, path
    return pixels.shape[1], pixels.shape[0]


def test_every_walkthrough_command_runs_on_small_folders(flat_image_folder: Path, class_tree_folder: Path,
                                                         local_hub, tmp_path: Path, monkeypatch, capsys) -> None:
    from huggingface_hub import constants

    monkeypatch.chdir(tmp_path)  # the walkthrough's relative outputs (runs/mine, *.png, knn.json) land here
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    folders = {"my_images/": str(flat_image_folder), "my_classes/": str(class_tree_folder)}
    for argv in walkthrough_commands():
        args = [folders.get(a, a) for a in argv[1:]]
        command = args[0]
        if command == "train":
            args += TINY_TRAIN
        elif command in NO_WORKERS:
            args += ["--num-workers", "0"]
        elif command == "push":
            args += ["--endpoint", local_hub.url]
        assert cli_main(args) == 0, (argv, capsys.readouterr().err)

    run = tmp_path / "runs" / "mine"
    config = json.loads((run / "config.json").read_text())["ssl_zoo"]
    assert config["data"]["kind"] == "unlabelled" and config["data"]["num_images"] == 60
    readme = (run / "README.md").read_text()
    assert "2 of 2 planned optimiser steps" in readme and "60 images" in readme
    assert "k-NN (T=0.07)" in readme  # eval added its row
    assert "--data CLASS_TREE --holdout 0.2" in readme  # unlabelled: evaluating needs a labelled tree
    _not_blank(run / "curves.png")
    # embed: one row per image of the flat folder (all 60 readable), in the table too
    from safetensors.numpy import load_file

    embeddings = load_file(tmp_path / "my_images.safetensors")["embeddings"]
    rows = (tmp_path / "my_images.csv").read_text().strip().splitlines()
    assert embeddings.shape[0] == 60 == len(rows) - 1
    _not_blank(tmp_path / "neighbors.png")
    _not_blank(tmp_path / "map.png")
    result = json.loads((tmp_path / "knn.json").read_text())
    assert result["dataset"]["name"] == "imagefolder" and result["dataset"]["holdout"]["fraction"] == 0.2
    assert result["model"]["weights_sha256"]  # bound to the weights push then checks it against
    from huggingface_hub import HfApi

    files = HfApi(endpoint=local_hub.url).list_repo_files("my-org/mine")
    assert {"model.safetensors", "config.json", "README.md"} <= set(files)
