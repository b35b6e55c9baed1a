"""``ssl-zoo embed`` and ``ssl_zoo.embed``: one embedding per image of a folder, written to a file.

    ssl-zoo embed --model runs/mine --data my_images/ --output embeddings.safetensors
    accelerate launch -m ssl_zoo.cli embed --model runs/mine --data my_images/ --output emb.npy

The folder is a flat (or nested) folder of images, or a class-per-folder tree (labels = the sorted first-level
folder names), read by :func:`list_images`. Each image goes through the model's evaluation transform (its
``pretrained_cfg``: Resize + CenterCrop + normalise) and the encoder by the one feature-extraction path of the
evaluation protocols (``ssl_zoo.evaluation.features.extract_features``): batched, with a progress bar, and under
``accelerate launch`` sharded over the processes and gathered back in folder order on every process; the main
process writes.

Output: ``F.safetensors`` (tensor ``embeddings`` (N, D) float32, plus ``labels`` (N,) int64 for a class tree) or
``F.npy`` (the (N, D) array), and a table with one row per embedding (``row, path`` relative to the folder, and
``label, class`` for a class tree): ``F.csv`` by default, ``--table T.csv`` or ``T.parquet`` (needs pyarrow).
Unreadable images (corrupt, truncated, not an image) get no row: they are printed at the end and listed in
``F.skipped.txt`` (``path<TAB>error``). Existing files are replaced only with ``--overwrite``.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserInputError

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch import Tensor, nn

EMBEDDING_SUFFIXES = (".safetensors", ".npy")
TABLE_SUFFIXES = (".csv", ".parquet")
UNREADABLE = -2  # the label code of an image that could not be decoded (unlabelled images are -1)


class EmbedError(UserInputError):
    """A problem with ``embed``'s arguments or files (one line, exit 2)."""


# -- reading a folder: as training and evaluation read it ------------------------------------------------------


def list_images(folder: str | Path) -> tuple[list[str], list[int] | None, list[str]]:
    """``(relative paths, labels or None, class names)`` of the images under ``folder``, in dataset order.

    The folder is read as training and evaluation read it (``ssl_zoo.data.folder.open_user_folder``): a class
    tree (every image one folder deep, >= 2 classes, train/val/test split folders merged) gives labels, the
    indices of the sorted class names; anything else is every image found recursively, unlabelled (labels None).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise EmbedError(f"--data {folder}: {'no such folder' if not root.exists() else 'not a folder'}; "
                         f"give a folder of images (flat, nested, or one sub-folder per class).")
    from .data.folder import open_user_folder

    images = open_user_folder(root)
    if images.layout.kind == "unlabelled":
        return list(images.relative_paths), None, []
    return list(images.relative_paths), [int(t) for t in images.targets], list(images.classes)


# -- the dataset: unreadable images are marked, not replaced ----------------------------------------------------

class MarkedImageFiles:
    """``(eval_transform(image), code)`` per file: ``code`` is the label (-1 unlabelled), or ``UNREADABLE`` with a
    blank image of the right shape, so every file keeps its row through the (sharded) extraction and the unreadable
    ones are dropped afterwards by their code."""

    def __init__(self, paths: Sequence[str | os.PathLike], codes: Sequence[int], transform: Any) -> None:
        from .data.base import PathTable

        self._paths = PathTable(paths)  # shared, not copied, by forked DataLoader workers
        self.codes = [int(c) for c in codes]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        from .data.base import UnreadableImageError, load_image

        try:
            return self.transform(load_image(self._paths[index])), self.codes[index]
        except UnreadableImageError:
            return self.transform(Image.new("RGB", (8, 8))), UNREADABLE


def read_error(path: str | os.PathLike) -> str:
    """Why an image cannot be read (the decoder's message), or '' when it now can."""
    from .data.base import UnreadableImageError, load_image

    try:
        load_image(path)
    except UnreadableImageError as exc:
        return str(exc.__cause__ or exc).splitlines()[0]
    return ""


# -- embedding ---------------------------------------------------------------------------------------------------

@dataclass
class Embeddings:
    """One row per readable image: ``features`` (N, D) float32 CPU, ``paths`` relative to ``root``, ``labels``
    (class indices into ``classes``) for a class tree, and the ``skipped`` ``(path, error)`` pairs."""

    features: Tensor
    paths: list[str]
    labels: list[int] | None
    classes: list[str]
    root: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)
    model: str = ""


def load_model(model: str, pretrained: bool = False, checkpoint: str | None = None) -> nn.Module:
    """The encoder of anything ``ssl-zoo eval --model`` / ``create_model`` accept: a recipe name, ``hf-hub:``,
    ``local-dir:FOLDER``, or a run / export folder."""
    from .evaluation import load_encoder

    if model.startswith("local-dir:"):
        model = model[len("local-dir:"):]
    try:
        return load_encoder(model, pretrained=pretrained, checkpoint=checkpoint)[0]
    except (ValueError, FileNotFoundError) as exc:
        from .errors import SslZooError, one_line

        if isinstance(exc, SslZooError):
            raise
        raise EmbedError(one_line(exc)) from None


def embed(model: str | nn.Module, data: str | Path, output: str | Path | None = None, *,
          table: str | Path | None = None, pretrained: bool = False, checkpoint: str | None = None,
          image_size: int | None = None, batch_size: int = 64, num_workers: int = 0, overwrite: bool = False,
          progress: bool = True, accelerator: Accelerator | None = None,
          device: str | None = None) -> Embeddings:
    """Embed every image under ``data`` with ``model`` (an encoder, or any ``--model`` spec) and its eval transform.

    With ``output`` (``.safetensors`` or ``.npy``) the embeddings, their table (``table`` or ``output`` with
    ``.csv``) and the list of unreadable files are written (main process only); existing files are refused unless
    ``overwrite``. ``batch_size`` is global (split over the ``accelerator``'s processes). Returns the
    :class:`Embeddings` (on every process).
    """
    paths, labels, classes = list_images(data)
    targets = _check_outputs(output, table, overwrite) if output is not None else None
    root = Path(data).expanduser()
    encoder = load_model(model, pretrained, checkpoint) if isinstance(model, str) else model
    result = embed_files([str(root / p) for p in paths], encoder, labels=labels, image_size=image_size,
                         batch_size=batch_size, num_workers=num_workers, progress=progress, accelerator=accelerator,
                         device=device)
    features, codes = result
    keep = [i for i, c in enumerate(codes) if c != UNREADABLE]
    skipped = [(paths[i], read_error(root / paths[i])) for i, c in enumerate(codes) if c == UNREADABLE]
    out = Embeddings(features[keep], [paths[i] for i in keep], [labels[i] for i in keep] if labels else None,
                     classes, root, skipped, model if isinstance(model, str) else type(model).__name__)
    if targets is not None and (accelerator is None or accelerator.is_main_process):
        write_embeddings(out, *targets)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return out


def embed_files(files: Sequence[str | os.PathLike], encoder: nn.Module, *, labels: Sequence[int] | None = None,
                image_size: int | None = None, batch_size: int = 64, num_workers: int = 0, progress: bool = True,
                accelerator: Accelerator | None = None, device: str | None = None) -> tuple[Tensor, list[int]]:
    """``(features, codes)`` of image files in order, through ``extract_features``: ``codes`` are the labels (-1
    when none) and ``UNREADABLE`` for files that could not be decoded (their feature row is meaningless)."""
    import torch

    from .evaluation.features import extract_features
    from .transforms import eval_transform

    if batch_size < 1 or num_workers < 0:
        raise EmbedError(f"--batch-size must be >= 1 and --num-workers >= 0 (got {batch_size}, {num_workers}).")
    codes_in = list(labels) if labels is not None else [-1] * len(files)
    dataset = MarkedImageFiles(files, codes_in, eval_transform(encoder, image_size))
    if accelerator is None and device is None:
        device = "cuda" if torch.cuda.is_available() else None
    world = accelerator.num_processes if accelerator is not None else 1
    features, codes = extract_features(encoder, dataset, batch_size=max(1, batch_size // world),  # type: ignore
                                       num_workers=num_workers, accelerator=accelerator, device=device,
                                       progress="embedding" if progress else None)
    return features, codes.tolist()


# -- writing -----------------------------------------------------------------------------------------------------

def skipped_path(output: Path) -> Path:
    """Where the unreadable files of ``output`` are listed: ``F.skipped.txt`` next to ``F.safetensors``."""
    return output.with_name(f"{output.stem}.skipped.txt")


def _check_outputs(output: str | Path, table: str | Path | None, overwrite: bool) -> tuple[Path, Path]:
    out = Path(output).expanduser()
    if out.suffix.lower() not in EMBEDDING_SUFFIXES:
        raise EmbedError(f"--output {output}: the suffix says the format; use .safetensors or .npy.")
    tab = Path(table).expanduser() if table is not None else out.with_suffix(".csv")
    if tab.suffix.lower() not in TABLE_SUFFIXES:
        raise EmbedError(f"--table {table}: use a .csv or .parquet file.")
    if tab.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise EmbedError(f"--table {tab}: Parquet needs pyarrow (pip install pyarrow); or use a .csv table."
                             ) from None
    if tab.resolve() == out.resolve():
        raise EmbedError(f"--table {tab} is the --output file; give the table another name.")
    if not overwrite:
        existing = [str(p) for p in (out, tab) if p.exists()]
        if existing:
            raise EmbedError(f"{' and '.join(existing)} already exist(s); pass --overwrite to replace, or choose "
                             f"another --output.")
    return out, tab


def write_embeddings(emb: Embeddings, output: Path, table: Path) -> list[Path]:
    """Write the embeddings (format by suffix), the table, and the skipped list (removed when nothing was
    skipped, so an old list never describes a new run). Returns the files written."""
    import numpy as np

    output.parent.mkdir(parents=True, exist_ok=True)
    table.parent.mkdir(parents=True, exist_ok=True)
    features = emb.features.float().contiguous()
    if output.suffix.lower() == ".npy":
        np.save(output, features.numpy())
    else:
        import torch
        from safetensors.torch import save_file

        tensors = {"embeddings": features}
        if emb.labels is not None:
            tensors["labels"] = torch.tensor(emb.labels, dtype=torch.int64)
        save_file(tensors, str(output), metadata={"format": "ssl_zoo.embed", "table": table.name,
                                                  "model": emb.model, "data": str(emb.root),
                                                  "classes": ",".join(emb.classes)})
    _write_table(emb, table)
    written = [output, table]
    skip_file = skipped_path(output)
    if emb.skipped:
        skip_file.write_text("".join(f"{p}\t{err}\n" for p, err in emb.skipped))
        written.append(skip_file)
    elif skip_file.exists():
        skip_file.unlink()
    return written


def _write_table(emb: Embeddings, table: Path) -> None:
    columns: dict[str, list[Any]] = {"row": list(range(len(emb.paths))), "path": emb.paths}
    if emb.labels is not None:
        columns["label"] = emb.labels
        columns["class"] = [emb.classes[i] for i in emb.labels]
    if table.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(columns), str(table))
        return
    import csv

    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(list(columns))
        writer.writerows(zip(*columns.values()))


# -- command line ------------------------------------------------------------------------------------------------

def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model --pretrained --checkpoint --data --image-size --batch-size --num-workers --cpu``: what
    ``embed``, ``neighbors`` and ``map`` share."""
    parser.add_argument("--model", required=True,
                        help="recipe name (random init unless --pretrained/--checkpoint), 'hf-hub:org/repo[@rev]', "
                             "'local-dir:FOLDER', or a run / exported model folder")
    parser.add_argument("--pretrained", action="store_true", help="load the recipe's published weights")
    parser.add_argument("--checkpoint", default=None, help="weights file or folder for a recipe name")
    parser.add_argument("--data", required=True, metavar="FOLDER",
                        help="folder of images: flat or nested (unlabelled), or one sub-folder per class")
    parser.add_argument("--image-size", type=int, default=None,
                        help="crop size (default: the model's pretrained_cfg input size)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size (default 64)")
    parser.add_argument("--num-workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="DataLoader workers per process (default: min(4, CPU count))")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when a GPU is present")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--output", required=True, metavar="FILE",
                        help="F.safetensors (tensor 'embeddings', + 'labels' for a class tree) or F.npy")
    parser.add_argument("--table", default=None, metavar="FILE",
                        help="row, path (relative to --data), label, class per embedding: .csv (default: the "
                             "output with .csv) or .parquet (needs pyarrow)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def run_cli(args: argparse.Namespace) -> int:
    from accelerate import Accelerator

    from .distributed import adopt_cpu_launch, check_launch, leave_together_at_exit

    _check_outputs(args.output, args.table, args.overwrite)  # before the model loads
    adopt_cpu_launch()  # torchrun on a CPU machine: gloo, as under `accelerate launch` (ssl_zoo.distributed)
    accelerator = Accelerator(cpu=args.cpu)
    check_launch(accelerator.num_processes)
    emb = embed(args.model, args.data, args.output, table=args.table, pretrained=args.pretrained,
                checkpoint=args.checkpoint, image_size=args.image_size, batch_size=args.batch_size,
                num_workers=args.num_workers, overwrite=args.overwrite, accelerator=accelerator)
    if accelerator.is_main_process:
        out = Path(args.output)
        table = Path(args.table) if args.table else out.with_suffix(".csv")
        labelled = f", {len(emb.classes)} classes" if emb.labels is not None else ", unlabelled"
        print(f"wrote {out} ({emb.features.shape[0]} x {emb.features.shape[1]}{labelled}) and {table}")
        report_skipped(emb.skipped, skipped_path(out))
    leave_together_at_exit()
    return 0


def report_skipped(skipped: Sequence[tuple[str, str]], listed_in: Path | None = None) -> None:
    """Print the unreadable files (all of them: the user has to fix each)."""
    if not skipped:
        return
    where = f" (listed in {listed_in})" if listed_in is not None else ""
    print(f"skipped {len(skipped)} unreadable image(s){where}:")
    for path, error in skipped:
        print(f"  {path}: {error}")
