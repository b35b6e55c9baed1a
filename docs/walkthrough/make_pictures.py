"""Redraw the pictures of README's "Your own images" walkthrough from real runs of its commands.

    python docs/walkthrough/make_pictures.py [--epochs 3] [--work /tmp/walkthrough]

"Your images" are the photo_patches benchmark written out as files (``ssl_zoo.data.photo_patches``: grey
32-px patches of ten scikit-image photos): its 1,260 train patches as a flat folder of unlabelled PNGs
(``my_images/``) and its 540 test patches as a class-per-folder tree (``my_classes/``). The script runs the
walkthrough's commands on them (MoCo v2's digits recipe, a few epochs, k-NN monitor on the tree) and copies
``curves.png``, ``neighbors.png`` and ``map.png`` here, with ``pictures.json`` saying how they were made.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write_folders(work: Path) -> tuple[Path, Path]:
    from PIL import Image

    from ssl_zoo.data.photo_patches import PHOTOS, photo_patches_arrays

    images, labels, splits = photo_patches_arrays()
    flat, tree = work / "my_images", work / "my_classes"
    for folder in (flat, tree):
        if folder.exists():
            shutil.rmtree(folder)
    flat.mkdir(parents=True)
    for n, i in enumerate(splits["train"]):
        Image.fromarray(images[i]).save(flat / f"patch_{n:04d}.png")
    for n, i in enumerate(splits["test"]):
        folder = tree / PHOTOS[int(labels[i])]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"patch_{n:04d}.png")
    return flat, tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of the walkthrough run (default 3)")
    parser.add_argument("--work", default="/tmp/ssl_zoo_walkthrough", help="scratch folder (replaced)")
    args = parser.parse_args(argv)
    from ssl_zoo.cli import main as ssl_zoo

    work = Path(args.work)
    flat, tree = write_folders(work)
    run = work / "runs" / "mine"
    commands = [
        ["train", "moco_v2_r18_digits", "--data", str(flat), "--output", str(run), "--epochs", str(args.epochs),
         "--overwrite", "--num-workers", "0"],
        ["plot", str(run), "--output", str(work / "curves.png")],
        ["neighbors", "--model", str(run), "--data", str(tree), "--k", "5", "--output", str(work / "neighbors.png"),
         "--num-workers", "0"],
        ["map", "--model", str(run), "--data", str(tree), "--output", str(work / "map.png"), "--num-workers", "0"],
    ]
    start = time.time()
    for command in commands:
        print("ssl-zoo " + " ".join(command), flush=True)
        if ssl_zoo(command) != 0:
            return 1
    for name in ("curves.png", "neighbors.png", "map.png"):
        shutil.copyfile(work / name, HERE / name)
    from ssl_zoo.report import machine_line

    record = {"commands": ["ssl-zoo " + " ".join(c).replace(str(work) + "/", "") for c in commands],
              "my_images": f"{flat.name}/: photo_patches train split, 1,260 PNGs, unlabelled",
              "my_classes": f"{tree.name}/: photo_patches test split, 540 PNGs in 10 class folders",
              "seconds": round(time.time() - start), "machine": machine_line(),
              "regenerate": "python docs/walkthrough/make_pictures.py " + " ".join(argv or sys.argv[1:])}
    (HERE / "pictures.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {', '.join(str(HERE / n) for n in ('curves.png', 'neighbors.png', 'map.png', 'pictures.json'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
