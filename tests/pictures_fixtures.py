"""Small folders of real digit scans for embed / neighbors / map: a flat folder in mixed sizes and modes with a
corrupt file, and a class tree."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

MODES = ("L", "RGB", "RGBA", "I;16", "P")


def _digits():
    from sklearn.datasets import load_digits

    return load_digits()


def digit_image(index: int, size: int, mode: str = "RGB") -> Image.Image:
    """Digit scan ``index`` of scikit-learn's digits, enlarged to ``size`` px, in PIL ``mode``."""
    digits = _digits()
    gray = Image.fromarray((digits.images[index] * (255 / 16)).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    if mode == "I;16":
        return Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    if mode == "RGBA":
        rgb = np.stack([np.asarray(gray)] * 3, -1)
        alpha = np.full(rgb.shape[:2], 255, np.uint8)
        return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    if mode == "P":
        return gray.convert("RGB").convert("P")
    return gray.convert(mode)


def make_flat_folder(root: Path, count: int = 20) -> Path:
    """``count`` readable images (sizes 12-47 px, five modes, some in a sub-folder) and one corrupt ``broken.png``
    plus a non-image file: a user's unlabelled folder."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "more").mkdir(exist_ok=True)
    for j in range(count):
        folder = root / "more" if j % 4 == 3 else root
        digit_image(j, 12 + (j * 7) % 36, MODES[j % len(MODES)]).save(folder / f"img_{j:02d}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    (root / "notes.txt").write_text("not an image")
    return root


def make_class_tree(root: Path, classes: int = 3, per_class: int = 6) -> Path:
    """``root/digit_<c>/<j>.png`` (24 px RGB) for the first ``classes`` digits."""
    digits = _digits()
    for c in range(classes):
        (root / f"digit_{c}").mkdir(parents=True, exist_ok=True)
        for j, idx in enumerate(np.flatnonzero(digits.target == c)[:per_class]):
            digit_image(int(idx), 24).save(root / f"digit_{c}" / f"{j}.png")
    return root
