"""Datasets by name, read from local copies in their published layouts.

``create_dataset(name, root, split, transform, label_fraction, seed)`` is the one entry point used by
training, evaluation and benchmarks; ``ssl-zoo datasets`` lists every name with the layout it expects.
"""
from __future__ import annotations

# The layout modules register in this order, after base and registry have loaded.
# isort: skip_file

from .base import (ArrayImageDataset, DatasetLayoutError, FileImageDataset, LabelledImageDataset,
                   UnreadableImageError, label_fraction_indices, load_image, to_rgb)
from .registry import (DatasetInfo, create_dataset, dataset_layout, get_dataset_info, list_datasets,
                       register_dataset)

# Importing each layout module registers its names.
from . import digits, folder  # noqa: E402,F401  (registration side effect)
from . import cub, cars, aircraft, gtsrb, isic, cifar, stl10  # noqa: E402,F401
from . import birdsnap, digits_textures, pets, photo_patches  # noqa: E402,F401
from .cli import configure_parser, run_cli  # noqa: E402
from .loader import build_train_loader, open_train_data  # noqa: E402
from .folder import (FolderLayout, UserImageFolder, detect_layout, list_image_files,  # noqa: E402
                     open_user_folder)

__all__ = [
    "create_dataset", "register_dataset", "list_datasets", "dataset_layout", "get_dataset_info", "DatasetInfo",
    "LabelledImageDataset", "FileImageDataset", "ArrayImageDataset", "DatasetLayoutError", "UnreadableImageError",
    "label_fraction_indices", "load_image", "to_rgb", "build_train_loader", "configure_parser", "run_cli",
    "open_train_data", "detect_layout", "open_user_folder", "list_image_files", "FolderLayout", "UserImageFolder",
]
