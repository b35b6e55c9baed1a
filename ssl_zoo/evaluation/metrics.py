"""Retrieval and k-NN metrics on feature matrices, computed in chunks of queries.

Every function here takes CPU or GPU tensors, L2-normalises the features itself
(cosine similarity) and never builds an N x N similarity matrix: only a
``chunk_size x N`` block is alive at a time. Results are fractions in [0, 1];
reports multiply by 100.

Ties are broken deterministically: neighbours with equal similarity are ranked
by their index in the gallery / training set (stable sort), and a k-NN vote tie
goes to the smallest class index. This makes chunked == unchunked and one
process == several processes (features gathered in dataset order).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_CHUNK_SIZE = 256


def _check_features(features: Tensor, labels: Tensor, what: str) -> None:
    if features.ndim != 2:
        raise ValueError(f"{what} features must be a 2-D (N, D) tensor, got shape {tuple(features.shape)}.")
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"{what} labels must be a 1-D tensor with one label per feature row: "
                         f"got labels {tuple(labels.shape)} for features {tuple(features.shape)}.")
    if features.shape[0] == 0:
        raise ValueError(f"{what} features are empty; the dataset has no images.")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{what} labels must be integer class indices, got dtype {labels.dtype}.")
    if not torch.isfinite(features).all():
        raise ValueError(f"{what} features contain NaN or inf; check the encoder / checkpoint.")


def _check_chunk(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")


def _rank(similarity: Tensor) -> Tensor:
    """Column indices of each row sorted by decreasing similarity; ties keep index order."""
    return torch.sort(similarity, dim=1, descending=True, stable=True).indices


@torch.no_grad()
def knn_predict(train_features: Tensor, train_labels: Tensor, test_features: Tensor, k: int = 20,
                temperature: float = 0.07, num_classes: int | None = None,
                chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
    """Weighted k-NN class predictions (InstDisc / solo-learn): the k most cosine-similar
    training features vote for their class with weight ``exp(s / temperature)``.

    Returns a 1-D int64 tensor of predicted class indices for ``test_features``.
    """
    _check_features(train_features, train_labels, "train")
    if test_features.ndim != 2 or test_features.shape[1] != train_features.shape[1]:
        raise ValueError(f"test features must be (M, {train_features.shape[1]}) like the train features, "
                         f"got shape {tuple(test_features.shape)}.")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    _check_chunk(chunk_size)
    if num_classes is None:
        num_classes = int(train_labels.max()) + 1
    elif int(train_labels.max()) >= num_classes:
        raise ValueError(f"num_classes={num_classes} but train labels go up to {int(train_labels.max())}.")
    k = min(k, train_features.shape[0])
    device = train_features.device
    bank = F.normalize(train_features.float(), dim=1)
    bank_labels = train_labels.to(device=device, dtype=torch.long)
    preds = []
    for start in range(0, test_features.shape[0], chunk_size):
        queries = F.normalize(test_features[start:start + chunk_size].to(device).float(), dim=1)
        similarity = queries @ bank.T
        neighbours = _rank(similarity)[:, :k]
        weights = (similarity.gather(1, neighbours) / temperature).exp()
        votes = torch.zeros(queries.shape[0], num_classes, device=device, dtype=weights.dtype)
        votes.scatter_add_(1, bank_labels[neighbours], weights)
        preds.append(votes.argmax(dim=1))  # argmax returns the first maximum: ties go to the lowest class
    return torch.cat(preds).cpu() if preds else torch.empty(0, dtype=torch.long)


@torch.no_grad()
def knn_accuracy(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
                 k: int = 20, temperature: float = 0.07, num_classes: int | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> float:
    """Top-1 accuracy of the weighted k-NN classifier, a fraction in [0, 1].

    Cosine similarity on L2-normalised features, the ``k`` nearest training items
    vote with ``exp(similarity / temperature)``. Processed ``chunk_size`` test
    queries at a time (memory ~ chunk_size x N_train floats).
    """
    _check_features(test_features, test_labels, "test")
    preds = knn_predict(train_features, train_labels, test_features, k=k, temperature=temperature,
                        num_classes=num_classes, chunk_size=chunk_size)
    return (preds == test_labels.cpu().long()).float().mean().item()


@torch.no_grad()
def retrieval_metrics(features: Tensor, labels: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict[str, float]:
    """Leave-one-out retrieval: every item queries all the others by cosine similarity.

    Returns ``{"rank1", "rank5", "mAP"}`` as fractions in [0, 1]:
    rank-k is the share of queries with an item of their class among the k nearest
    (hit rate); mAP is the mean over queries of the average precision over the
    full ranking of the N - 1 other items.

    A query whose class has no other item (a class with a single image) has no
    relevant item: it counts as a miss for rank-1 / rank-5 and is left out of
    mAP, whose average precision is undefined for it. Raises ``ValueError`` when
    no query has a relevant item at all.
    """
    _check_features(features, labels, "retrieval")
    _check_chunk(chunk_size)
    n = features.shape[0]
    if n < 2:
        raise ValueError("retrieval needs at least two items (each query is ranked against the others).")
    device = features.device
    gallery = F.normalize(features.float(), dim=1)
    labels = labels.to(device=device, dtype=torch.long)
    # precision at rank r = hits in the first r / r, for r = 1 .. N-1
    ranks = torch.arange(1, n, device=device, dtype=torch.float32)
    hits1 = hits5 = 0.0
    ap_sum, ap_count = 0.0, 0
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        rows = torch.arange(stop - start, device=device)
        similarity = gallery[start:stop] @ gallery.T
        # The query itself goes last (cosine >= -1 > -inf) and is then cut off.
        similarity[rows, rows + start] = float("-inf")
        order = _rank(similarity)[:, : n - 1]
        relevant = labels[order] == labels[start:stop, None]
        hits1 += relevant[:, 0].sum().item()
        hits5 += relevant[:, :5].any(dim=1).sum().item()
        num_relevant = relevant.sum(dim=1)
        precision = relevant.float().cumsum(dim=1) / ranks
        ap = (precision * relevant).sum(dim=1)
        has_relevant = num_relevant > 0
        ap_sum += (ap[has_relevant] / num_relevant[has_relevant]).sum().item()
        ap_count += int(has_relevant.sum().item())
    if ap_count == 0:
        raise ValueError("no query has another item of its class, so retrieval is undefined; "
                         "retrieval needs at least one class with two or more images.")
    return {"rank1": hits1 / n, "rank5": hits5 / n, "mAP": ap_sum / ap_count}


def queries_without_positive(labels: Tensor) -> int:
    """How many items are the only member of their class (no relevant item when they query)."""
    counts = torch.bincount(labels.long().cpu())
    return int((counts == 1).sum().item())


def topk_accuracy(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose label is among the top-k logits, for each k (k capped at the class count)."""
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits must be (N, C) with N = len(labels); got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}.")
    maxk = min(max(ks), logits.shape[1])
    top = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :maxk]
    correct = top == labels.to(logits.device).long()[:, None]
    return {k: correct[:, :min(k, maxk)].any(dim=1).float().mean().item() for k in ks}
