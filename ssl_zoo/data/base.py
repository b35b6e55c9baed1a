"""The dataset type every loader returns, image decoding to RGB, layout errors and label fractions."""
from __future__ import annotations

import copy
import math
import os
import textwrap
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..errors import SslZooError

OnError = Literal["raise", "skip"]
ON_ERROR_CHOICES = ("raise", "skip")
# Consecutive unreadable files tolerated by on_error="skip" before giving up: a dataset that is
# mostly unreadable is a wrong layout, not a few bad files.
MAX_CONSECUTIVE_SKIPS = 64


class DatasetLayoutError(SslZooError, FileNotFoundError):
    """The files under ``root`` are missing or do not match the dataset's published layout."""


class UnreadableImageError(SslZooError, OSError):
    """An image file could not be decoded (corrupt, truncated, not an image)."""


def layout_error(name: str, root: Path | str | None, problem: str, layout: str) -> DatasetLayoutError:
    """A :class:`DatasetLayoutError` naming the dataset, the path, the problem and the expected tree."""
    return DatasetLayoutError(
        f"Dataset {name!r}: {problem}\n  root: {root}\n"
        f"Expected layout under root:\n{textwrap.indent(layout.strip(chr(10)), '    ')}\n"
        f"(`ssl-zoo datasets {name}` prints this layout; `--data` / root must point at its top folder.)")


def require_dir(name: str, root: Path | str | None, layout: str) -> Path:
    """``root`` as a Path, or a layout error when it is missing or not a folder."""
    if root is None:
        raise layout_error(name, root, "no root folder given (pass root=... or --data DIR).", layout)
    path = Path(root).expanduser()
    if not path.exists():
        raise layout_error(name, path, "the root folder does not exist.", layout)
    if not path.is_dir():
        raise layout_error(name, path, "root is not a folder.", layout)
    return path


def require_files(name: str, root: Path, paths: Sequence[str | os.PathLike], layout: str, what: str = "file") -> None:
    """Layout error listing the first few of ``paths`` that do not exist."""
    missing = [str(p) for p in paths if not os.path.exists(p)]
    if missing:
        shown = "\n    ".join(missing[:5]) + (f"\n    ... and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise layout_error(name, root, f"{len(missing)} {what}(s) listed by the layout are missing:\n    {shown}",
                           layout)


def check_classes_nonempty(name: str, root: Path | None, classes: Sequence[str], targets: Sequence[int],
                           layout: str, split: str) -> None:
    """Every class must have at least one labelled image in the split (unlabelled targets are -1)."""
    counts = np.bincount(np.asarray([t for t in targets if t >= 0], dtype=np.int64), minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts[:len(classes)] == 0)]
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
        raise layout_error(name, root, f"{len(empty)} class(es) have no image in split {split!r}: {shown}", layout)


def checked_file_dataset(name: str, root: Path, paths: Sequence[Path], targets: Sequence[int],
                         classes: Sequence[str], split: str, layout: str) -> FileImageDataset:
    """The dataset of a parsed layout, after checking that every listed image exists and no class is empty."""
    require_files(name, root, paths, layout, "image")
    check_classes_nonempty(name, root, classes, targets, layout, split)
    return FileImageDataset(paths, targets, classes, name=name, root=root, split=split)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: 16-bit and float images are rescaled (not clipped),
    transparent images are composited on white (not on whatever colour hides under alpha=0)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(image).astype(np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        elif mode == "F" and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        elif mode == "I" and arr.size and arr.max() > 255:
            arr = arr / 257.0  # 16-bit data stored in a 32-bit container (older Pillow PNG reader)
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file fully (so truncation shows here, not inside a transform) as RGB."""
    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            image.load()
        return to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImageError(
            f"Cannot read image {path}: {exc}. Replace or delete the file, or pass on_error='skip' "
            f"to create_dataset (`ssl-zoo train ... --skip-bad-images`) to skip unreadable images (each skip is "
            f"warned and counted); `ssl-zoo datasets NAME --data ROOT --check` "
            f"lists every unreadable file.") from exc


def skimage_sample_images(names: Sequence[str], needed_by: str) -> list[np.ndarray]:
    """scikit-image's bundled sample images (``skimage.data.NAME()``), as stored; an optional dependency, so a
    missing install is a one-line error naming the dataset that needs it."""
    try:
        import skimage.data
    except ImportError as exc:
        from ..errors import UserInputError
        raise UserInputError(f"The {needed_by} dataset needs scikit-image: pip install scikit-image.") from exc
    return [np.asarray(getattr(skimage.data, name)()) for name in names]


class LabelledImageDataset(Dataset):
    """Map-style dataset of ``(transform(rgb_pil_image), label)`` with ``classes`` and ``targets``.

    Subclasses say where image ``i`` comes from (``_load``, ``_describe``, ``_take``).
    Unlabelled images (STL-10 ``unlabeled``) have target ``-1``.
    """

    def __init__(self, targets: Sequence[int], classes: Sequence[str], *, name: str, root: Path | None = None,
                 split: str = "train", transform: Callable | None = None, on_error: OnError = "raise") -> None:
        self.targets: list[int] = [int(t) for t in targets]
        self.classes: list[str] = [str(c) for c in classes]
        self.name, self.root, self.split = name, root, split
        self.transform = transform
        self.on_error = on_error
        self.num_skipped = 0  # per process: each DataLoader worker counts its own
        # on_error="skip": a file every process and worker appends each skipped image to (training sets it in
        # the run folder), so the run can list them at its end; None: warnings only
        self.skip_log: str | None = None

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.targets)

    def _load(self, index: int) -> Image.Image:
        raise NotImplementedError

    def _describe(self, index: int) -> str:
        raise NotImplementedError

    def _take(self, indices: np.ndarray) -> None:
        """Keep only ``indices`` of the per-sample storage (targets are handled by :meth:`subset`)."""
        raise NotImplementedError

    def load_rgb(self, index: int) -> Image.Image:
        """Image ``index`` as an RGB PIL image, no transform, no skipping."""
        return to_rgb(self._load(index))

    def __getitem__(self, index: int) -> tuple[Any, int]:
        n = len(self)
        for attempt in range(MAX_CONSECUTIVE_SKIPS):
            i = (index + attempt) % n
            try:
                image = self.load_rgb(i)
            except UnreadableImageError as exc:
                if self.on_error != "skip":
                    raise
                self.num_skipped += 1
                if self.skip_log is not None:  # one short O_APPEND write: whole lines from concurrent workers
                    with open(self.skip_log, "a") as fh:
                        fh.write(f"{self._describe(i)}\t{str(exc.__cause__ or exc).splitlines()[0]}\n")
                # The next image stands in so the batch keeps its size; the warning names the file.
                warnings.warn(f"Skipped unreadable image ({self.num_skipped} so far in this process): {exc}",
                              RuntimeWarning, stacklevel=2)
                continue
            return (self.transform(image) if self.transform is not None else image), self.targets[i]
        raise UnreadableImageError(f"{MAX_CONSECUTIVE_SKIPS} consecutive unreadable images from index {index} in "
                                   f"dataset {self.name!r} (root {self.root}); is this the right folder?")

    def subset(self, indices: Sequence[int]) -> LabelledImageDataset:
        """A copy keeping ``indices`` (classes unchanged)."""
        idx = np.asarray(indices, dtype=np.int64)
        new = copy.copy(self)
        new.targets = [self.targets[i] for i in idx]
        new._take(idx)
        return new

    def find_unreadable(self, progress: bool = False) -> list[tuple[str, str]]:
        """Decode every image; return ``(file, error)`` for each one that fails."""
        bad = []
        indices = range(len(self))
        if progress:
            from tqdm import tqdm
            indices = tqdm(indices, desc=f"checking {self.name}", unit="img")
        for i in indices:
            try:
                self.load_rgb(i)
            except UnreadableImageError as exc:
                bad.append((self._describe(i), str(exc.__cause__ or exc)))
        return bad

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, root={str(self.root)!r}, "
                f"images={len(self)}, classes={len(self.classes)})")


class PathTable:
    """File paths packed in two numpy arrays (utf-8 bytes + offsets).

    A Python list of a million path strings gets copied page by page into every forked DataLoader
    worker as reference counts change (pytorch/pytorch#13246); numpy buffers stay shared.
    """

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        encoded = [os.fspath(p).encode("utf-8", "surrogateescape") for p in paths]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self.offsets[1:])
        self.data = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:
        start, end = self.offsets[index], self.offsets[index + 1]
        return self.data[start:end].tobytes().decode("utf-8", "surrogateescape")

    def take(self, indices: np.ndarray) -> PathTable:
        return PathTable([self[int(i)] for i in indices])


class FileImageDataset(LabelledImageDataset):
    """Images read from files (``samples`` is a list of ``(path, label)`` as in torchvision)."""

    def __init__(self, paths: Sequence[str | os.PathLike], targets: Sequence[int], classes: Sequence[str],
                 **kwargs: Any) -> None:
        if len(paths) != len(targets):
            raise ValueError(f"{len(paths)} paths but {len(targets)} targets")
        super().__init__(targets, classes, **kwargs)
        self._paths = PathTable(paths)

    @property
    def paths(self) -> list[str]:
        """Image file paths, in dataset order."""
        return [self._paths[i] for i in range(len(self._paths))]

    @property
    def samples(self) -> list[tuple[str, int]]:
        """``(path, label)`` pairs, as torchvision's ImageFolder."""
        return list(zip(self.paths, self.targets))

    def _load(self, index: int) -> Image.Image:
        return load_image(self._paths[index])

    def _describe(self, index: int) -> str:
        return self._paths[index]

    def _take(self, indices: np.ndarray) -> None:
        self._paths = self._paths.take(indices)


class ArrayImageDataset(LabelledImageDataset):
    """Images held in memory as a ``(N, H, W, 3)`` uint8 array (CIFAR, STL-10, digits)."""

    def __init__(self, images: np.ndarray, targets: Sequence[int], classes: Sequence[str], **kwargs: Any) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be a (N, H, W, 3) uint8 array, got {images.shape} {images.dtype}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        super().__init__(targets, classes, **kwargs)
        self.images = images

    def _load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])

    def _describe(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def _take(self, indices: np.ndarray) -> None:
        self.images = self.images[indices]


def stratified_split(targets: Sequence[int], test_fraction: float | None = None, seed: int = 0, *,
                     test_size: int | None = None) -> tuple[list[int], list[int]]:
    """Seeded class-stratified ``(keep, held_out)`` index lists (sorted); give a fraction or a size."""
    from sklearn.model_selection import train_test_split

    indices = list(range(len(targets)))
    keep, held = train_test_split(indices, test_size=test_size if test_size is not None else test_fraction,
                                  stratify=list(targets), random_state=seed)
    return sorted(int(i) for i in keep), sorted(int(i) for i in held)


def label_fraction_indices(targets: Sequence[int], fraction: float, seed: int = 0) -> list[int]:
    """Indices keeping ``fraction`` of each class (rounded, at least one image per class).

    Deterministic for a seed, and nested: with one seed the 20% subset lies inside the 50% subset,
    because each class is shuffled once (seeded by ``(seed, class)``) and a prefix is kept.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    t = np.asarray(targets, dtype=np.int64)
    if (t < 0).any():
        raise ValueError("label_fraction needs labelled images, but this split has unlabelled ones (target -1); "
                         "use a labelled split such as 'train'.")
    keep = []
    for c in np.unique(t):
        members = np.flatnonzero(t == c)
        order = np.random.default_rng([seed, int(c)]).permutation(len(members))
        k = max(1, int(math.floor(fraction * len(members) + 0.5)))
        keep.append(members[np.sort(order[:k])])
    return sorted(int(i) for i in np.concatenate(keep)) if keep else []


def require_base_folder(name: str, root: Path, base: str, layout: str) -> Path:
    """``find_base_folder`` or a layout error saying the dataset folder is missing."""
    found = find_base_folder(root, base)
    if found is None:
        raise layout_error(name, root, f"no {base}/ folder.", layout)
    return found


def find_base_folder(root: Path, base: str) -> Path | None:
    """``root/base`` or ``root`` itself when the user pointed at the dataset folder; None if neither exists.

    torchvision's classes take the *parent* of their dataset folder; users give either.
    """
    if (root / base).is_dir():
        return root / base
    if root.name == base:
        return root
    return None
