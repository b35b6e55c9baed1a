"""The seed-0 pilots behind ``photo_patches`` (issue 14, item 8): candidate embedded datasets, each scored
untrained and after a short MoCo v2 run, to find one where the untrained encoder is well below 50% k-NN@20 and
MoCo v2 improves it within the digits recipe's CPU budget.

    python benchmarks/dataset_pilots.py untrained colour_60 palette_60 photo_16_48_g
    python benchmarks/dataset_pilots.py train photo_16_48_g --method moco_v2 --epochs 30 --knn-every 5

``untrained`` scores a random-init encoder (seeds 0 and 1) with ``compare.py``'s protocol; ``train`` trains the
method's ``*_r18_digits`` recipe on the candidate (seed 0, online k-NN every ``--knn-every`` epochs) and
scores the result the same way. Candidates (``NAME``, numbers are parameters):

* ``colour_D``: the digits with a random background and digit colour per image (luma differs by >= D);
  ``grey``: the same colours as grey levels; ``palette_K``: the colour pairs drawn from K fixed pairs;
  ``jit_S``: one colour pair, then a frozen ColorJitter(S, S, S, min(S / 4, 0.5)) per image;
  ``noise_LO_HI_rgb|grey``: Gaussian pixel noise with a per-image sigma in [LO, HI].
* ``const_LEVEL_LO_HI``: a digit of LO-HI px at a random position on a constant grey 32 px canvas;
  ``fixbg_PHOTO_LO_HI[_LEVEL_CONTRAST]``: the same on one fixed (optionally dimmed) scikit-image photo.
* ``pairs_NTRAIN_NTEST_W``: two digits side by side, 100 classes (the two-digit number).
* ``photo_LO_HI_g|c``: which of 10 scikit-image photos a LO-HI px patch comes from (grey or colour).
  ``photo_16_48_g`` became ``photo_patches`` (its grey conversion here truncates grey photos' values by at most
  one level, which the package's does not).

Scratch tooling kept so the pilot numbers in docs/results.md can be re-run; nothing here is registered in the
package.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import ssl_zoo
from ssl_zoo.data.base import ArrayImageDataset
from ssl_zoo.data.digits import digits_arrays
from ssl_zoo.data.registry import register_dataset
from ssl_zoo.recipe import get_recipe, register_recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import evaluate_encoder  # noqa: E402

Arrays = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]
PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "moon", "rocket")
SIZE = 32


def luma(c: np.ndarray) -> np.ndarray:
    return 0.299 * c[..., 0] + 0.587 * c[..., 1] + 0.114 * c[..., 2]


def colour_pairs(rng: np.random.Generator, n: int, min_dluma: float) -> tuple[np.ndarray, np.ndarray]:
    """n (background, digit) RGB pairs whose luma differs by at least ``min_dluma``."""
    bg, fg = np.empty((n, 3)), np.empty((n, 3))
    for i in range(n):
        while True:
            b, f = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            if abs(luma(b) - luma(f)) >= min_dluma:
                break
        bg[i], fg[i] = b, f
    return bg, fg


def recoloured(name: str) -> Arrays:
    """The 32 px digits, recoloured or with noise; the ink of each scan is the alpha."""
    images, labels, splits = digits_arrays()
    alpha = images[..., :1].astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    n = len(images)
    kind, *args = name.split("_")
    if kind == "noise":
        sigma = rng.uniform(float(args[0]), float(args[1]), n)[:, None, None, None]
        shape = images.shape if args[2] == "rgb" else images.shape[:3] + (1,)
        out = images.astype(np.float32) + sigma * rng.normal(0, 1, shape)
    elif kind == "palette":
        pal_bg, pal_fg = colour_pairs(rng, int(args[0]), 60)
        pick = rng.integers(0, int(args[0]), n)
        out = (1 - alpha) * pal_bg[pick][:, None, None] + alpha * pal_fg[pick][:, None, None]
    elif kind == "jit":
        from torchvision.transforms import v2
        strength = float(args[0])
        base = (1 - alpha) * np.array([40., 70., 150.]) + alpha * np.array([250., 200., 60.])
        batch = torch.from_numpy(base.round().clip(0, 255).astype(np.uint8)).permute(0, 3, 1, 2)
        torch.manual_seed(0)
        jitter = v2.ColorJitter(strength, strength, strength, min(strength / 4, 0.5))
        out = torch.stack([jitter(x) for x in batch]).permute(0, 2, 3, 1).numpy().astype(np.float32)
    elif kind == "colour":
        bg, fg = colour_pairs(rng, n, int(args[0]))
        out = (1 - alpha) * bg[:, None, None] + alpha * fg[:, None, None]
    elif kind == "grey":
        bg, fg = colour_pairs(rng, n, 60)
        bg, fg = luma(bg)[:, None].repeat(3, 1), luma(fg)[:, None].repeat(3, 1)
        out = (1 - alpha) * bg[:, None, None] + alpha * fg[:, None, None]
    else:
        raise SystemExit(f"unknown candidate {name!r}")
    return out.round().clip(0, 255).astype(np.uint8), labels, splits


def placed(name: str) -> Arrays:
    """A bright digit at a random size and position on one canvas shared by every image."""
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_digits

    _, labels, splits = digits_arrays()
    parts = name.split("_")
    lo, hi = int(parts[2]), int(parts[3])
    if parts[0] == "const":
        canvas = np.full((SIZE, SIZE, 3), float(parts[1]), np.float32)
    else:
        photo = np.asarray(getattr(skimage.data, parts[1])())
        photo = (np.repeat(photo[..., None], 3, -1) if photo.ndim == 2 else photo)[..., :3]
        h, w = photo.shape[:2]
        c = min(h, w)
        square = photo[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]
        canvas = np.asarray(Image.fromarray(square).resize((SIZE, SIZE), Image.BILINEAR)).astype(np.float32)
        if len(parts) > 4:  # level * mean + contrast * (x - mean)
            level, contrast = float(parts[4]), float(parts[5])
            mean = canvas.mean((0, 1))
            canvas = level * mean + contrast * (canvas - mean)
    rng = np.random.default_rng(0)
    scans = load_digits().images
    out = np.empty((len(scans), SIZE, SIZE, 3), np.uint8)
    for i, scan in enumerate(scans):
        size = int(rng.integers(lo, hi + 1))
        ink = Image.fromarray((scan * (255 / 16)).astype(np.uint8)).resize((size, size), Image.BICUBIC)
        alpha = np.asarray(ink).astype(np.float32)[..., None] / 255.0
        top, left = rng.integers(0, SIZE - size + 1, size=2)
        image = canvas.copy()
        region = image[top:top + size, left:left + size]
        image[top:top + size, left:left + size] = (1 - alpha) * region + alpha * 235.0
        out[i] = image.round().clip(0, 255)
    return out, labels, splits


def pairs(name: str) -> Arrays:
    """Two digit scans of the split side by side; class = 10 * left + right (balanced)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    _, labels, splits = digits_arrays()
    scans = load_digits().images
    _, n_train, n_test, width = name.split("_")
    w = int(width)
    h = min(SIZE, int(w * 1.5))
    rng = np.random.default_rng(0)
    images, classes, idx = [], [], {}
    for split, n in (("train", int(n_train)), ("test", int(n_test))):
        pool = splits[split]
        by_class = [pool[labels[pool] == c] for c in range(10)]
        start = len(images)
        for i in range(n):
            canvas = np.zeros((SIZE, SIZE), np.float32)
            for j, digit in enumerate(divmod(i % 100, 10)):
                scan = scans[rng.choice(by_class[digit])]
                ink = Image.fromarray((scan * (255 / 16)).astype(np.uint8)).resize((w, h), Image.BILINEAR)
                top, left = (SIZE - h) // 2, j * (SIZE // 2) + (SIZE // 2 - w) // 2
                canvas[top:top + h, left:left + w] = np.maximum(canvas[top:top + h, left:left + w],
                                                                np.asarray(ink).astype(np.float32))
            images.append(canvas)
            classes.append(i % 100)
        idx[split] = np.arange(start, len(images))
    out = np.repeat(np.stack(images)[..., None], 3, -1).round().clip(0, 255).astype(np.uint8)
    return out, np.array(classes), idx


def photo(name: str) -> Arrays:
    """Which of PHOTOS a LO-HI px patch comes from; train from the left 65% of columns, test from the rest."""
    import skimage.data
    from PIL import Image

    _, lo, hi, mode = name.split("_")
    sources = []
    for p in PHOTOS:
        x = np.asarray(getattr(skimage.data, p)())
        x = (np.repeat(x[..., None], 3, -1) if x.ndim == 2 else x)[..., :3]
        if mode == "g":
            x = np.repeat(luma(x).astype(np.uint8)[..., None], 3, -1)
        sources.append(x)
    rng = np.random.default_rng(0)
    images, classes, idx = [], [], {}
    for split, n, (first, last) in (("train", 1260, (0.0, 0.65)), ("test", 540, (0.65, 1.0))):
        start = len(images)
        for i in range(n):
            x = sources[i % len(PHOTOS)]
            height, width = x.shape[:2]
            col0, col1 = int(first * width), int(last * width)
            side = int(rng.integers(int(lo), min(int(hi), col1 - col0, height) + 1))
            top = rng.integers(0, height - side + 1)
            left = rng.integers(col0, col1 - side + 1)
            patch = Image.fromarray(np.ascontiguousarray(x[top:top + side, left:left + side]))
            images.append(np.asarray(patch.resize((SIZE, SIZE), Image.BILINEAR)))
            classes.append(i % len(PHOTOS))
        idx[split] = np.arange(start, len(images))
    return np.stack(images), np.array(classes), idx


def candidate(name: str) -> Arrays:
    kind = name.split("_")[0]
    builders = {"photo": photo, "pairs": pairs, "fixbg": placed, "const": placed}
    return builders.get(kind, recoloured)(name)


def register(name: str) -> list[str]:
    """Register the candidate as dataset ``pilot_NAME`` and each method's digits recipe on it."""
    images, labels, splits = candidate(name)
    dataset = f"pilot_{name}"
    classes = [str(c) for c in range(int(labels.max()) + 1)]

    def build(root: Path | None, split: str, **kwargs: object) -> ArrayImageDataset:
        idx = splits[split]
        return ArrayImageDataset(images[idx], labels[idx], classes, name=dataset, root=None, split=split)

    register_dataset(dataset, build, "(pilot)", ("train", "test"), "pilot candidate")
    names = []
    for base in ("moco_v2_r18_digits", "simsiam_r18_digits", "leoclr_r18_digits", "moco_v2_synth_r18_digits"):
        recipe = get_recipe(base)
        names.append(base.replace("_digits", f"_{dataset}"))
        register_recipe(dataclasses.replace(recipe, name=names[-1], dataset=dataset))
    return names


def percent(scores: dict) -> dict:
    return {k: round(100 * v, 2) for k, v in scores.items() if k.endswith("top1")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("untrained", "train"))
    p.add_argument("names", nargs="+", help="candidate names (see the module docstring)")
    p.add_argument("--method", default="moco_v2", help="train: the method whose *_r18_digits recipe trains")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--knn-every", type=int, default=5)
    p.add_argument("--runs", default="runs/pilots")
    args = p.parse_args()
    for name in args.names:
        recipes = register(name)
        if args.mode == "untrained":
            for seed in (0, 1):
                torch.manual_seed(seed)
                scores = evaluate_encoder(ssl_zoo.create_model(recipes[0]), recipes[0], seed, None)
                print(json.dumps({"candidate": name, "seed": seed, "untrained": percent(scores)}), flush=True)
            continue
        from ssl_zoo.train import train
        recipe = next(r for r in recipes if r.startswith(args.method + "_r18"))
        out = Path(args.runs) / f"{name}_{args.method}"
        start = time.time()
        train(recipe, epochs=args.epochs, seed=0, output=out, progress_bar=False, overwrite=True,
              knn_every=args.knn_every)
        scores = evaluate_encoder(ssl_zoo.create_model(recipe, checkpoint=out), recipe, 0, None)
        online = [(r["epoch"], round(r["knn_top1"], 1)) for r in map(json.loads, (out / "log.jsonl").open())
                  if "knn_top1" in r]
        print(json.dumps({"candidate": name, "method": args.method, "epochs": args.epochs, "seed": 0,
                          "minutes": round((time.time() - start) / 60, 1), "trained": percent(scores),
                          "online_knn20": online}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
