"""Your own images and class-folder layouts: ``imagefolder``, ``unlabelled_images``, ``imagenet1k``, ``imagenet100``.

Class trees are scanned by torchvision's ImageFolder (its extension list: jpg, jpeg, png, ppm, bmp, pgm, tif,
tiff, webp, any case; hidden files and folders such as ``.ipynb_checkpoints`` or macOS ``._x.jpg`` skipped);
images are then read by :class:`FileImageDataset`. :func:`detect_layout` tells which layout a folder has (a
named dataset's own, a class tree, or a folder of unlabelled images); :func:`open_user_folder` reads every image
of a folder with its class (or -1) and its path relative to the folder (``embed``, ``neighbors``, ``map``).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from torchvision.datasets import ImageFolder

from .base import (
    DatasetLayoutError,
    FileImageDataset,
    LabelledImageDataset,
    OnError,
    check_classes_nonempty,
    layout_error,
    require_dir,
)
from .registry import create_dataset, get_dataset_info, register_dataset

# torchvision's IMG_EXTENSIONS; compared case-insensitively
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm")
SPLIT_FOLDERS = ("train", "val", "test")
# The datasets that read a user's folder as it is found (not a published layout).
USER_FOLDER_DATASETS = ("imagefolder", "unlabelled_images")

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


def _hidden(name: str) -> bool:
    return name.startswith(".")


def is_image_file(path: str | os.PathLike) -> bool:
    """An image by its extension (any case), not a hidden file (macOS ``._x.jpg`` resource forks are not images)."""
    name = os.path.basename(path)
    return not _hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Every image file under ``folder`` and its subfolders, sorted; hidden folders are skipped, symbolic links
    followed (each real folder once, so a link loop ends)."""
    seen: set[str] = set()
    found: list[Path] = []
    for here, dirs, files in os.walk(os.fspath(folder), followlinks=True):
        real = os.path.realpath(here)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        found.extend(Path(here) / f for f in sorted(files) if is_image_file(f))
    return sorted(found)


def _no_images(root: Path) -> DatasetLayoutError:
    return DatasetLayoutError(f"No images in {root}: searched it and its subfolders for {' '.join(IMAGE_EXTENSIONS)} "
                              f"files (any case).")


class _VisibleImageFolder(ImageFolder):
    """ImageFolder whose classes are the visible subfolders (``.ipynb_checkpoints`` is not a class)."""

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not _hidden(e.name))
        if not classes:
            raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
        return classes, {c: i for i, c in enumerate(classes)}


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
            scanned = _VisibleImageFolder(str(folder), loader=_no_loader, is_valid_file=is_image_file)
        else:
            scanned = _SelectedClassesFolder(str(folder), classes, loader=_no_loader, is_valid_file=is_image_file)
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
            raise DatasetLayoutError(
                f"{root} is a class tree with no {split}/ folder (nor val/), so it has only a 'train' split: hold "
                f"out a seeded, class-stratified part of it with --holdout 0.2 (`ssl-zoo eval`), or add "
                f"{split}/<class>/ folders.")
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


UNLABELLED_LAYOUT = """
root/                         any folder of images, nested or flat (no labels)
  *.jpg|png|webp|bmp|tif|...  every image under root, subfolders included (any case)
  holiday/2019/*.png
"""


def build_unlabelled_images(root: Path | None, split: str, **kwargs: Any) -> FileImageDataset:
    """Every image under ``root`` (recursively) with target -1: self-supervised training needs no label."""
    if kwargs:
        raise TypeError(f"unlabelled_images takes no extra arguments, got {sorted(kwargs)}")
    root = require_dir("unlabelled_images", root, UNLABELLED_LAYOUT)
    paths = list_image_files(root)
    if not paths:
        raise _no_images(root)
    return FileImageDataset(paths, [-1] * len(paths), [], name="unlabelled_images", root=root, split=split)


# -- which layout a folder has ------------------------------------------------------------------------

LayoutKind = Literal["dataset", "class_tree", "unlabelled"]
KIND_WORDS = {"dataset": "the {dataset} layout", "class_tree": "a class tree", "unlabelled": "an unlabelled folder"}


@dataclass(frozen=True)
class FolderLayout:
    """What :func:`detect_layout` found: which kind of folder, the ``create_dataset`` name that reads it, and
    how many images (of the split it was asked about) and classes it has."""

    kind: LayoutKind  # "dataset": a named dataset's own layout; "class_tree": root/<class>/*; "unlabelled"
    dataset: str  # the create_dataset name that reads it
    root: Path
    num_images: int
    classes: tuple[str, ...] = ()
    splits: tuple[str, ...] = ("train",)  # the splits create_dataset(dataset, root, split) can read

    @property
    def labelled(self) -> bool:
        return self.kind != "unlabelled"

    def describe(self) -> str:
        """``"an unlabelled folder of 60 images (my_images)"``: one phrase for the console."""
        what = KIND_WORDS[self.kind].format(dataset=self.dataset)
        classes = f", {len(self.classes)} classes" if self.kind == "class_tree" else ""
        return f"{what} of {self.num_images} images{classes} ({self.root})"

    def to_dict(self) -> dict[str, Any]:
        """The record written to config.json (``ssl_zoo.data``) and read back by ``ssl-zoo eval``."""
        return {"kind": self.kind, "dataset": self.dataset, "path": str(self.root), "num_images": self.num_images,
                "num_classes": len(self.classes), "splits": list(self.splits)}


def _class_tree(root: Path, paths: Sequence[Path]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """``(classes, splits)`` when every image sits exactly one folder deep in >= 2 class folders (or in
    train/, val/, test/ folders that are such trees); else None."""
    rel = [p.relative_to(root).parts for p in paths]
    if rel and all(len(r) == 2 for r in rel):
        classes = tuple(sorted({r[0] for r in rel}))
        return (classes, ("train",)) if len(classes) >= 2 else None
    if rel and all(len(r) == 3 and r[0] in SPLIT_FOLDERS for r in rel) and any(r[0] == "train" for r in rel):
        classes = tuple(sorted({r[1] for r in rel if r[0] == "train"}))
        if len(classes) < 2:
            return None
        splits = {r[0] for r in rel}
        readable = ["train"] + [s for s in ("val", "test") if s in splits or (s == "test" and "val" in splits)]
        return classes, tuple(readable)
    return None


def _scan_user_folder(root: Path) -> tuple[FolderLayout, list[Path]]:
    """A class tree or an unlabelled folder (no named dataset's layout tried)."""
    paths = list_image_files(root)
    if not paths:
        raise _no_images(root)
    tree = _class_tree(root, paths)
    if tree is None:
        return FolderLayout("unlabelled", "unlabelled_images", root, len(paths)), paths
    classes, splits = tree
    in_train = sum(1 for p in paths if len(p.relative_to(root).parts) == 2
                   or p.relative_to(root).parts[0] == "train")
    return FolderLayout("class_tree", "imagefolder", root, in_train, classes, splits), paths


def _user_root(path: str | os.PathLike) -> Path:
    root = Path(path).expanduser()
    if not root.exists():
        raise DatasetLayoutError(f"The folder {root} does not exist.")
    if not root.is_dir():
        raise DatasetLayoutError(f"{root} is not a folder: pass the folder that holds the images.")
    return root


def detect_layout(path: str | os.PathLike, dataset: str | None = None, split: str = "train") -> FolderLayout:
    """Which layout the folder ``path`` has (see :func:`detect_and_open`)."""
    return detect_and_open(path, dataset, split)[0]


def detect_and_open(path: str | os.PathLike, dataset: str | None = None, split: str = "train",
                    on_error: OnError = "raise") -> tuple[FolderLayout, LabelledImageDataset | None]:
    """Which layout the folder ``path`` has, in this order: ``dataset``'s own published layout (when ``dataset``
    reads a folder and is not itself a user-folder reader; the split ``split`` is opened to check it, and
    returned), else a class tree (every image in exactly one level of >= 2 subfolders, or such trees under
    train/, val/, test/), else a folder of unlabelled images (recursive). Returns the layout and the dataset
    opened to check it (None unless the kind is ``"dataset"``).

    No image anywhere is a one-line :class:`DatasetLayoutError` naming the folder and the extensions searched
    (and why the folder is not ``dataset``'s layout either).
    """
    root = _user_root(path)
    mismatch = ""
    if dataset is not None and dataset not in USER_FOLDER_DATASETS and get_dataset_info(dataset).reads_folder:
        try:
            opened = create_dataset(dataset, root, split=split, on_error=on_error)
        except DatasetLayoutError as exc:
            mismatch = " ".join(str(exc).split("\n  root:")[0].split())  # the problem, not the layout tree
        else:
            return FolderLayout("dataset", dataset, root, len(opened), tuple(opened.classes),
                                get_dataset_info(dataset).splits), opened
    try:
        return _scan_user_folder(root)[0], None
    except DatasetLayoutError as exc:
        if mismatch:
            raise DatasetLayoutError(f"{exc} Nor is it a {dataset} folder: {mismatch} (`ssl-zoo datasets "
                                     f"{dataset}` shows that layout).") from None
        raise


class UserImageFolder(FileImageDataset):
    """Every image of a user's folder: ``(transform(image), class index or -1)``, with ``relative_paths``
    (to ``root``, in dataset order), ``classes`` (empty when unlabelled) and the detected ``layout``."""

    def __init__(self, paths: Sequence[Path], targets: Sequence[int], classes: Sequence[str], layout: FolderLayout,
                 **kwargs: Any) -> None:
        super().__init__(paths, targets, classes, name=layout.dataset, root=layout.root, split="all", **kwargs)
        self.layout = layout

    @property
    def relative_paths(self) -> list[str]:
        root = str(self.root)
        return [os.path.relpath(p, root) for p in self.paths]


def open_user_folder(path: str | os.PathLike, transform: Callable | None = None,
                     on_error: OnError = "raise") -> UserImageFolder:
    """Every image under ``path`` as a dataset of ``(image, label)``: the class folder's index in a class tree
    (split folders train/, val/, test/ merged, classes sorted), -1 in an unlabelled folder. ``.layout`` says
    which it found, ``.relative_paths`` and ``.classes`` name each image and label."""
    root = _user_root(path)
    layout, paths = _scan_user_folder(root)
    if layout.kind == "unlabelled":
        targets, classes = [-1] * len(paths), []
    else:
        parts = [p.relative_to(root).parts for p in paths]
        class_of = [r[-2] for r in parts]
        classes = sorted(set(class_of))
        index = {c: i for i, c in enumerate(classes)}
        targets = [index[c] for c in class_of]
        layout = FolderLayout("class_tree", "imagefolder", root, len(paths), tuple(classes), layout.splits)
    return UserImageFolder(paths, targets, classes, layout, transform=transform, on_error=on_error)


register_dataset("imagefolder", build_imagefolder, IMAGEFOLDER_LAYOUT, ("train", "val", "test"),
                 "any folder of class subfolders (your own images; `--data DIR` with a digits recipe)")
register_dataset("imagenet1k", build_imagenet1k, IMAGENET_LAYOUT, ("train", "val", "test"),
                 "ImageNet-1k (ILSVRC 2012); 'test' reads val/, whose labels are public")
register_dataset("imagenet100", build_imagenet100, IMAGENET100_LAYOUT, ("train", "val", "test"),
                 "ImageNet-100: the CMC 100-class subset selected from an ImageNet root")
register_dataset("unlabelled_images", build_unlabelled_images, UNLABELLED_LAYOUT, ("train",),
                 "any folder of images, flat or nested, without labels (your own images for `ssl-zoo train`)")
