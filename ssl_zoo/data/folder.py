"""Class-folder layouts: ``imagefolder`` (any folder), ``imagenet1k`` and ``imagenet100``.

Scanning uses torchvision's ImageFolder (its extension list: jpg, jpeg, png, ppm, bmp, pgm, tif,
tiff, webp, any case); images are then read by :class:`FileImageDataset`.
"""
from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from torchvision.datasets import ImageFolder

from .base import FileImageDataset, check_classes_nonempty, layout_error, require_dir
from .registry import register_dataset

IMAGEFOLDER_LAYOUT = """
root/
  <class_a>/*.jpg|png|...      one folder per class (sorted names -> labels 0, 1, ...)
  <class_b>/*.jpg
or, with splits:
root/
  train/<class>/*.jpg
  val/<class>/*.jpg   (or test/; split "test" reads test/, else val/)
"""

IMAGENET_LAYOUT = """
root/
  train/n01440764/*.JPEG ... (1000 wnid folders)
  val/n01440764/*.JPEG ...   (1000 wnid folders: the common layout made by valprep.sh)
"""

IMAGENET100_LAYOUT = """
root/                       an ImageNet-1k root, or a folder holding only the 100 classes
  train/<wnid>/*.JPEG       must contain the 100 wnids of imagenet100.txt (CMC / solo-learn list)
  val/<wnid>/*.JPEG
"""


class _SelectedClassesFolder(ImageFolder):
    """ImageFolder restricted to a given set of class folders (ImageNet-100 from an ImageNet root)."""

    def __init__(self, root: str, wanted: Sequence[str], **kwargs: Any) -> None:
        self._wanted = list(wanted)
        super().__init__(root, **kwargs)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        present = {p.name for p in Path(directory).iterdir() if p.is_dir()}
        missing = sorted(set(self._wanted) - present)
        if missing:
            raise FileNotFoundError(f"{len(missing)} of the {len(self._wanted)} class folders are missing under "
                                    f"{directory}: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
        classes = sorted(self._wanted)
        return classes, {c: i for i, c in enumerate(classes)}


def _no_loader(path: str) -> None:  # ImageFolder wants a loader; FileImageDataset does the reading
    raise RuntimeError("not used")


def scan_class_folders(name: str, folder: Path, root: Path, split: str, layout: str,
                       classes: Sequence[str] | None = None) -> FileImageDataset:
    """FileImageDataset over ``folder/<class>/<image>``; ``classes`` restricts and orders the classes."""
    try:
        if classes is None:
            scanned = ImageFolder(str(folder), loader=_no_loader)
        else:
            scanned = _SelectedClassesFolder(str(folder), classes, loader=_no_loader)
    except FileNotFoundError as exc:
        # torchvision's messages ("Couldn't find any class folder", "Found no valid file for the classes X")
        raise layout_error(name, root, f"{exc} (in {folder})", layout) from None
    paths = [p for p, _ in scanned.samples]
    check_classes_nonempty(name, root, scanned.classes, scanned.targets, layout, split)
    return FileImageDataset(paths, scanned.targets, scanned.classes, name=name, root=root, split=split)


def _split_folder(root: Path, split: str) -> Path | None:
    candidates = {"train": ["train"], "val": ["val"], "test": ["test", "val"]}[split]
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    return None


def build_imagefolder(root: Path | None, split: str, **kwargs: Any) -> FileImageDataset:
    if kwargs:
        raise TypeError(f"imagefolder takes no extra arguments, got {sorted(kwargs)}")
    root = require_dir("imagefolder", root, IMAGEFOLDER_LAYOUT)
    folder = _split_folder(root, split)
    if folder is None:
        if split != "train":
            raise layout_error("imagefolder", root, f"split {split!r} needs a {split}/ folder (or val/) under root; "
                               "a root made of class folders only has the 'train' split.", IMAGEFOLDER_LAYOUT)
        folder = root  # the root's subfolders are the classes
    return scan_class_folders("imagefolder", folder, root, split, IMAGEFOLDER_LAYOUT)


def _imagenet_split_dir(name: str, root: Path, split: str, layout: str) -> Path:
    folder = root / ("train" if split == "train" else "val")
    if not folder.is_dir():
        raise layout_error(name, root, f"missing folder {folder}.", layout)
    if split != "train" and not any(p.is_dir() for p in folder.iterdir()):
        raise layout_error(name, root, f"{folder} has no class folders. If it holds the 50,000 flat "
                           "ILSVRC2012_val_*.JPEG files, move them into wnid folders first (e.g. with the widely "
                           "used valprep.sh from soumith/imagenetloader.torch).", layout)
    return folder


def build_imagenet1k(root: Path | None, split: str, **kwargs: Any) -> FileImageDataset:
    if kwargs:
        raise TypeError(f"imagenet1k takes no extra arguments, got {sorted(kwargs)}")
    root = require_dir("imagenet1k", root, IMAGENET_LAYOUT)
    folder = _imagenet_split_dir("imagenet1k", root, split, IMAGENET_LAYOUT)
    ds = scan_class_folders("imagenet1k", folder, root, split, IMAGENET_LAYOUT)
    if len(ds.classes) != 1000:
        raise layout_error("imagenet1k", root, f"{folder} has {len(ds.classes)} class folders, ImageNet-1k has "
                           "1000. For another class-folder dataset use 'imagefolder'.", IMAGENET_LAYOUT)
    return ds


def imagenet100_classes() -> list[str]:
    """The 100 ImageNet wnids of ImageNet-100 (CMC, Tian et al. 2019; also used by solo-learn), file order."""
    text = resources.files(__package__).joinpath("imagenet100.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def build_imagenet100(root: Path | None, split: str, **kwargs: Any) -> FileImageDataset:
    if kwargs:
        raise TypeError(f"imagenet100 takes no extra arguments, got {sorted(kwargs)}")
    root = require_dir("imagenet100", root, IMAGENET100_LAYOUT)
    folder = _imagenet_split_dir("imagenet100", root, split, IMAGENET100_LAYOUT)
    # Labels follow sorted wnids, as ImageFolder gives on an extracted ImageNet-100 folder.
    return scan_class_folders("imagenet100", folder, root, split, IMAGENET100_LAYOUT, imagenet100_classes())


register_dataset("imagefolder", build_imagefolder, IMAGEFOLDER_LAYOUT, ("train", "val", "test"),
                 "any folder of class subfolders (your own images; `--data DIR` with a digits recipe)")
register_dataset("imagenet1k", build_imagenet1k, IMAGENET_LAYOUT, ("train", "val", "test"),
                 "ImageNet-1k (ILSVRC 2012); 'test' reads val/, whose labels are public")
register_dataset("imagenet100", build_imagenet100, IMAGENET100_LAYOUT, ("train", "val", "test"),
                 "ImageNet-100: the CMC 100-class subset selected from an ImageNet root")
