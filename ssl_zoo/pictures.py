"""Pictures of what an encoder does with a folder of images: ``ssl-zoo neighbors`` and ``ssl-zoo map``.

    ssl-zoo neighbors --model runs/mine --data my_images/ --k 5 --output neighbors.png
    ssl-zoo neighbors --model runs/mine --data my_images/ --query my_images/cat.jpg other.png
    ssl-zoo map --model runs/mine --data my_images/ --method pca --output map.png
    ssl-zoo map --model runs/mine --data my_images/ --method tsne --thumbnails --output map_thumbs.png

Both embed the folder with :func:`ssl_zoo.embedding.embed` (the model's eval transform, the evaluation protocols'
feature extraction). ``neighbors``: one row per query (default: ``--num-queries`` images spread evenly over the
folder's sorted list), the query then its ``--k`` most cosine-similar images of the folder (itself excluded), the
similarity under each, green / red when a class tree says same / other class (ranked like ``eval retrieval``:
``ssl_zoo.evaluation.metrics.nearest_neighbors``). ``map``: the L2-normalised embeddings in 2-D by PCA
(scikit-learn), t-SNE (scikit-learn) or UMAP (the ``map`` extra: ``pip install ssl_zoo[map]``), one colour per
class with a legend, or the images themselves at their places (``--thumbnails``).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .embedding import add_model_arguments
from .errors import UserInputError

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

    from .embedding import Embeddings

MAP_METHODS = ("pca", "tsne", "umap")
METHOD_NAMES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
CELL_INCHES = 1.45  # one thumbnail of the neighbours grid
DPI = 100


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    return plt


def thumbnail(path: str | Path, size: int = 128) -> np.ndarray:
    """An RGB uint8 array of the image, its longer side at most ``size`` px (aspect kept)."""
    import numpy as np
    from PIL import Image

    from .data import load_image

    image = load_image(path)
    scale = size / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR)
    return np.asarray(image)


def _embed_folder(args: argparse.Namespace) -> tuple[Any, Embeddings]:
    from .embedding import embed, list_images, load_model, report_skipped

    list_images(args.data)  # a wrong folder is said before the model loads
    encoder = load_model(args.model, args.pretrained, args.checkpoint)
    device = "cpu" if args.cpu else None
    emb = embed(encoder, args.data, image_size=args.image_size, batch_size=args.batch_size,
                num_workers=args.num_workers, device=device)
    emb.model = args.model
    report_skipped(emb.skipped)
    if emb.features.shape[0] < 2:
        raise UserInputError(f"--data {args.data}: {emb.features.shape[0]} readable image(s); a picture needs "
                             f"at least 2.")
    return encoder, emb


# -- neighbours --------------------------------------------------------------------------------------------------

def pick_queries(count: int, n: int) -> list[int]:
    """``count`` indices spread evenly over ``0 .. n-1`` (first and last included): the same picks every time, and
    from several classes of a class tree (its files are sorted by class)."""
    import numpy as np

    return sorted({int(i) for i in np.linspace(0, n - 1, min(count, n)).round()})


def draw_neighbors(queries: Sequence[tuple[np.ndarray, str, str | None]],
                   neighbours: Sequence[Sequence[tuple[np.ndarray, float, str | None]]], title: str = "") -> Figure:
    """The grid: row i = query i (image, caption, class) then its neighbours (image, similarity, class)."""
    plt = _pyplot()
    rows, k = len(queries), max(len(n) for n in neighbours)
    fig, axes = plt.subplots(rows, k + 1, figsize=(CELL_INCHES * (k + 1), CELL_INCHES * 1.22 * rows + 0.5),
                             squeeze=False)
    for i, ((image, caption, query_class), found) in enumerate(zip(queries, neighbours)):
        ax = axes[i][0]
        ax.imshow(image)
        ax.text(0.5, -0.04, caption, transform=ax.transAxes, ha="center", va="top", fontsize=7, weight="bold")
        for side in ax.spines.values():
            side.set(color="black", linewidth=3)
        for j, (neighbour, similarity, neighbour_class) in enumerate(found, start=1):
            ax = axes[i][j]
            ax.imshow(neighbour)
            colour = "black"
            caption = f"{similarity:.3f}"
            if query_class is not None and neighbour_class is not None:
                colour = "green" if neighbour_class == query_class else "red"
                caption += f" {neighbour_class}"
            ax.text(0.5, -0.04, caption, transform=ax.transAxes, ha="center", va="top", fontsize=7, color=colour)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes[i][len(found) + 1:]:
            ax.axis("off")
    axes[0][0].set_title("query", fontsize=9)
    for j in range(1, k + 1):
        axes[0][j].set_title(f"#{j}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _short(text: str, width: int = 22) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def neighbors_picture(args: argparse.Namespace) -> Path:
    import torch

    from .embedding import embed_files
    from .evaluation.metrics import nearest_neighbors

    if args.k < 1 or args.num_queries < 1:
        raise UserInputError(f"--k and --num-queries must be >= 1 (got {args.k}, {args.num_queries}).")
    encoder, emb = _embed_folder(args)
    n = emb.features.shape[0]
    root = emb.root.resolve()
    index_of = {(root / p).resolve(): i for i, p in enumerate(emb.paths)}
    if args.query:
        query_paths = [Path(q).expanduser().resolve() for q in args.query]
        missing = [q for q, p in zip(args.query, query_paths) if not p.is_file()]
        if missing:
            raise UserInputError(f"--query {missing[0]}: no such file.")
        outside = [p for p in query_paths if p not in index_of]
        extra = {}
        if outside:
            feats, codes = embed_files(outside, encoder, image_size=args.image_size, progress=False,
                                       device="cpu" if args.cpu else None)
            bad = [str(p) for p, c in zip(outside, codes) if c < -1]
            if bad:
                raise UserInputError(f"--query {bad[0]}: cannot read this image.")
            extra = {p: feats[i] for i, p in enumerate(outside)}
        rows = [emb.features[index_of[p]] if p in index_of else extra[p] for p in query_paths]
        exclude = [index_of.get(p, -1) for p in query_paths]
        captions = [_short(str(p.relative_to(root)) if p in index_of else p.name) for p in query_paths]
        classes = [emb.classes[emb.labels[index_of[p]]] if emb.labels is not None and p in index_of else None
                   for p in query_paths]
        images = [thumbnail(p) for p in query_paths]
    else:
        picks = pick_queries(args.num_queries, n)
        rows = [emb.features[i] for i in picks]
        exclude = picks
        captions = [_short(emb.paths[i]) for i in picks]
        classes = [emb.classes[emb.labels[i]] if emb.labels is not None else None for i in picks]
        images = [thumbnail(root / emb.paths[i]) for i in picks]
    available = n - (1 if any(e >= 0 for e in exclude) else 0)
    k = min(args.k, available)
    if k < args.k:
        print(f"note: --k {args.k} is more than the folder's {available} other image(s); showing {k}.")
    indices, similarities = nearest_neighbors(torch.stack(rows), emb.features, k,
                                              exclude=torch.tensor(exclude) if any(e >= 0 for e in exclude)
                                              else None)
    found = [[(thumbnail(root / emb.paths[j]), float(s),
               emb.classes[emb.labels[j]] if emb.labels is not None else None)
              for j, s in zip(idx.tolist(), sims.tolist())] for idx, sims in zip(indices, similarities)]
    fig = draw_neighbors(list(zip(images, captions, classes)), found,
                         title=f"{args.model}: nearest neighbours by cosine similarity\nin {args.data} ({n} images)")
    return _save(fig, args.output)


def _save(fig: Figure, output: str | Path) -> Path:
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    _pyplot().close(fig)
    return out


def configure_neighbors_parser(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--query", nargs="+", default=None, metavar="IMG",
                        help="query image(s), in the folder or not (default: --num-queries picks from the folder)")
    parser.add_argument("--num-queries", type=int, default=4, help="queries picked from the folder (default 4)")
    parser.add_argument("--k", type=int, default=5, help="neighbours per query (default 5)")
    parser.add_argument("--output", default="neighbors.png", metavar="PNG", help="default neighbors.png")


def run_neighbors(args: argparse.Namespace) -> int:
    print(f"wrote {neighbors_picture(args)}")
    return 0


# -- the 2-D map -------------------------------------------------------------------------------------------------

def project_2d(features: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """``(N, 2)`` coordinates of the L2-normalised features (cosine geometry, as k-NN and retrieval)."""
    import numpy as np

    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    n = x.shape[0]
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        if n < 4:
            raise UserInputError(f"t-SNE needs at least 4 images, the folder has {n}; use --method pca.")
        return TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca",
                    random_state=seed).fit_transform(x)
    if method == "umap":
        return _import_umap().UMAP(n_components=2, n_neighbors=max(2, min(15, n - 1)), metric="cosine",
                         random_state=seed).fit_transform(x)
    raise UserInputError(f"--method {method!r}: choose one of {', '.join(MAP_METHODS)}.")


def _import_umap() -> Any:
    try:
        import umap
    except ImportError:
        raise UserInputError("--method umap needs umap-learn: pip install 'ssl_zoo[map]' (or use --method pca "
                             "or tsne).") from None
    return umap


def draw_map(coords: np.ndarray, labels: Sequence[int] | None, classes: Sequence[str],
             images: dict[int, np.ndarray] | None = None, title: str = "", thumb_px: int = 40) -> Figure:
    """Points coloured by class (legend), or with ``images`` the thumbnails at their points (framed in their
    class colour)."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 8))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    colour_of = [cmap(i % cmap.N) for i in range(max(1, len(classes)))]
    if labels is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=22, color="tab:blue", alpha=0.7,
                   label=f"{len(coords)} images (no labels)")
    else:
        lab = np.asarray(labels)
        for c, name in enumerate(classes):
            members = lab == c
            if members.any():
                ax.scatter(coords[members, 0], coords[members, 1], s=22, color=colour_of[c], alpha=0.8,
                           label=f"{name} ({int(members.sum())})")
    if images:
        from matplotlib.offsetbox import AnnotationBbox, OffsetImage

        for i, image in images.items():
            edge = colour_of[labels[i]] if labels is not None else "none"
            picture = OffsetImage(image, zoom=thumb_px / max(image.shape[:2]))
            box = AnnotationBbox(picture, (coords[i, 0], coords[i, 1]), frameon=True, pad=0.1,
                                 bboxprops={"edgecolor": edge, "linewidth": 1.5})
            ax.add_artist(box)
    ax.legend(fontsize=8, loc="best", markerscale=1.5, title="class" if labels is not None else None)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def map_picture(args: argparse.Namespace) -> Path:

    if args.max_thumbnails < 1:
        raise UserInputError(f"--max-thumbnails must be >= 1, got {args.max_thumbnails}.")
    if args.method == "umap":
        _import_umap()  # a missing extra is said before the folder is embedded
    _, emb = _embed_folder(args)
    features = emb.features.numpy()
    coords = project_2d(features, args.method, args.seed)
    images = None
    if args.thumbnails:
        shown = pick_queries(args.max_thumbnails, len(coords))
        images = {i: thumbnail(emb.root / emb.paths[i], 64) for i in shown}
    n = len(coords)
    what = f"{len(images)} of {n} images" if images is not None and len(images) < n else f"{n} images"
    fig = draw_map(coords, emb.labels, emb.classes, images,
                   title=f"{args.model}: {METHOD_NAMES[args.method]} of the embeddings\nof {args.data} ({what})")
    return _save(fig, args.output)


def configure_map_parser(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--method", choices=MAP_METHODS, default="pca",
                        help="pca (default), tsne (scikit-learn) or umap (pip install 'ssl_zoo[map]')")
    parser.add_argument("--thumbnails", action="store_true", help="draw the images at their places")
    parser.add_argument("--max-thumbnails", type=int, default=300,
                        help="images drawn with --thumbnails, spread over the folder (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="t-SNE / UMAP seed (default 0)")
    parser.add_argument("--output", default="map.png", metavar="PNG", help="default map.png")


def run_map(args: argparse.Namespace) -> int:
    print(f"wrote {map_picture(args)}")
    return 0
