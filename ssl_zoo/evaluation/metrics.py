"""Retrieval and k-NN metrics on feature matrices, computed in chunks of queries.

Every function here takes CPU or GPU tensors, L2-normalises the features itself
(cosine similarity) and never builds an N x N similarity matrix: only a
``chunk_size x N`` block is alive at a time. Results are fractions in [0, 1];
reports multiply by 100.

Ties are broken deterministically: neighbours with equal similarity are ranked
by their index in the gallery / training set (the order of a stable sort), and a
k-NN vote tie goes to the smallest class index. This makes chunked == unchunked
and one process == several processes (features gathered in dataset order).

No row is fully sorted: k-NN takes a ``topk`` and retrieval counts, for each
relevant item only, how many items rank above it (see ``_order_keys``). Both give
the ranks a full stable sort would give, ties included.
"""
from __future__ import annotations

import bisect
import operator

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_CHUNK_SIZE = 256
DEFAULT_KNN_K = (20, 200)  # InstDisc / solo-learn's k; `ssl-zoo eval knn` clamps them to a small bank


def clamp_k(ks: tuple[int, ...] | list[int], bank_size: int) -> tuple[list[int], str | None]:
    """``ks`` with each k at most ``bank_size`` (duplicates dropped, order kept), and a note naming what
    changed (None when nothing did): small own data has fewer images than the default k=200."""
    if bank_size < 1:
        raise ValueError("the k-NN bank is empty; the train split has no images.")
    clamped = list(dict.fromkeys(min(int(k), bank_size) for k in ks))
    changed = [k for k in ks if k > bank_size]
    if not changed:
        return clamped, None
    return clamped, (f"k {', '.join(map(str, changed))} -> {bank_size}: the k-NN bank has only {bank_size} images; "
                     f"k = {', '.join(map(str, clamped))} used")


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
    # One sum instead of an elementwise pass (~50x cheaper on CPU): a NaN or inf anywhere makes the sum
    # non-finite; a non-finite sum of finite values (an overflow) is told apart by the exact check.
    if not torch.isfinite(features.sum()) and not torch.isfinite(features).all():
        raise ValueError(f"{what} features contain NaN or inf; check the encoder / checkpoint.")


def _check_chunk(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")


_LOW_32 = 0xFFFFFFFF
_MAX_INT64 = torch.iinfo(torch.int64).max


def _order_keys(similarity: Tensor) -> Tensor:
    """One int64 key per entry of a float32 (or float16 / bfloat16) ``(rows, n)`` similarity block, unique
    within a row, whose descending order is the stable descending order of the row (equal similarities:
    lower column first).

    High 32 bits: the similarity as an order-preserving integer; low 32 bits: ``n - 1 - column``.
    ``topk`` / ``searchsorted`` on these keys then reproduce a stable sort without sorting the row.
    """
    if similarity.dtype in (torch.float16, torch.bfloat16):  # a matmul under autocast; widening is exact
        similarity = similarity.float()
    elif similarity.dtype != torch.float32:
        raise TypeError(f"order keys need float32 similarities, got {similarity.dtype}.")
    bits = similarity.contiguous().view(torch.int32)
    sign = bits >> 31  # -1 for negative floats, 0 otherwise
    key = bits & 0x7FFFFFFF
    # negative floats map to -magnitude: monotone, and -0.0 == +0.0 as in a float comparison sort
    key ^= sign
    key -= sign
    del sign  # peak memory is a few of these blocks: free each one early
    key = key.to(torch.int64)
    key <<= 32
    n = similarity.shape[1]
    key |= torch.arange(n - 1, -1, -1, device=similarity.device, dtype=torch.int64)
    return key


def _top_columns(similarity: Tensor, k: int) -> Tensor:
    """The first ``k`` columns of each row's stable descending sort, in that order.

    A ``topk`` of ``k + 1`` on the similarities themselves, then the stable order among the first ``k`` (value
    descending, column ascending). That set is the stable sort's unless the (k+1)-th value equals the k-th (ties
    across the boundary, e.g. duplicate images): those rows alone are redone on order keys. No pass over the block
    besides the ``topk`` itself (the order keys took several).
    """
    if similarity.dtype in (torch.float16, torch.bfloat16):
        similarity = similarity.float()
    n = similarity.shape[1]
    values, columns = torch.topk(similarity, min(k + 1, n), dim=1)
    crossing = values[:, k] == values[:, k - 1] if k < n else torch.zeros_like(values[:, 0], dtype=torch.bool)
    values, columns = values[:, :k], columns[:, :k]
    columns, by_column = columns.sort(dim=1)
    order = values.gather(1, by_column).argsort(dim=1, descending=True, stable=True)
    columns = columns.gather(1, order)
    if bool(crossing.any()):
        rows = crossing.nonzero().flatten()
        keys = torch.topk(_order_keys(similarity[rows]), k, dim=1).values  # keys are unique: no tie to break
        columns[rows] = (n - 1) - (keys & _LOW_32)
    return columns


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
        neighbours = _top_columns(similarity, k)
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


# Up to this many relevant slots, one comparison pass per slot beats a binary search of every key
# (benchmarks/eval_speed.py: ~0.6 ms per pass against ~9 ms per search step for a 256 x 6,000 block on one
# CPU thread, i.e. 19 ms against 43 ms for 30 slots); above it, the search's log(width) wins. (On a CPU, from
# `_BUCKETS_MIN_WIDTH` slots on, value buckets beat both.)
_COMPARE_PASSES_MAX = 64


def _count_below(sorted_keys: Tensor, keys: Tensor, rows_per_slot: list[int] | None = None) -> Tensor:
    """``(rows, n)`` int64: for each of ``keys``' entries, how many of its row's ``sorted_keys`` (ascending)
    lie strictly below it; the numbers ``torch.searchsorted(sorted_keys, keys)`` returns.

    ``rows_per_slot[s]``, when given, promises that slot ``s`` of every row from that index on holds padding
    above every key (the largest int64), so those rows can skip it.
    """
    width = sorted_keys.shape[1]
    if width > _COMPARE_PASSES_MAX:
        return torch.searchsorted(sorted_keys, keys)
    # uint8 holds up to 255 >= width; one bool buffer is reused by every pass (no allocation per slot)
    below = torch.zeros(keys.shape, device=keys.device, dtype=torch.uint8)
    above = torch.empty(keys.shape, device=keys.device, dtype=torch.bool)
    for slot in range(width):
        rows = keys.shape[0] if rows_per_slot is None else rows_per_slot[slot]
        torch.gt(keys[:rows], sorted_keys[:rows, slot : slot + 1], out=above[:rows])
        below[:rows] += above[:rows].view(torch.uint8)
    return below.long()


# On the CPU, blocks of rows with this many relevant slots or more count by value buckets
# (``_count_below_by_buckets``): 5-7 ms for a whole 64 x 6,000 rank block at any width from 10 to 600 slots,
# where comparison passes take ~0.35 ms per slot (3.3 ms at 8 slots, 6.6 at 17, 14 at 40-70) and the binary
# search ~19 ms at 600 (benchmarks/eval_speed.py's random features, one CPU thread; about even at 10-12 slots).
# On a GPU the search is one parallel kernel with no host synchronisation, which the buckets' walk would add:
# it keeps `_count_below`.
_BUCKETS_MIN_WIDTH = 12
_BUCKETS_PER_SLOT = 8  # more buckets: fewer relevant keys share one, so fewer walks, but longer tables
_DENSE_STEPS = 2  # walk steps taken over the whole block; after them about 1% of the items still walk
_SPARSE_STEPS_MAX = 32  # a longer walk means many tied similarities: the binary search is then cheaper


def _scratch(buffers: dict[str, Tensor], name: str, shape: tuple[int, int], dtype: torch.dtype,
             device: torch.device) -> Tensor:
    """A ``shape`` view of a buffer kept in ``buffers`` between chunks: fresh blocks of this size cost page
    faults on every chunk (an int64 copy of a 256 x 6,000 block: ~5 ms fresh, ~1 ms into a held buffer)."""
    numel = shape[0] * shape[1]
    held = buffers.get(name)
    if held is None or held.numel() < numel or held.dtype != dtype:
        held = buffers[name] = torch.empty(numel, device=device, dtype=dtype)
    return held[:numel].view(shape)


def _count_below_by_buckets(similarity: Tensor, keys: Tensor, padded_keys: Tensor, members: Tensor,
                            relevant: Tensor, buffers: dict[str, Tensor]) -> Tensor | None:
    """``_count_below(padded_keys[:, :-1], keys)`` without a binary search of every key: exact, for wide rows
    on a CPU.

    ``padded_keys`` ``(rows, width + 1)``: each row's relevant keys ascending, then padding (the largest int64)
    in at least the last column; ``members[relevant]`` are the relevant items' columns in ``similarity``, whose
    order keys ``keys`` are. Overwrites ``similarity``; the result lives in ``buffers`` until their next use.
    Returns None when walks would be long (many equal similarities): the caller then searches.

    Each row's range of relevant similarities is cut into equal buckets. A similarity's bucket is a monotone
    function of it (subtract, scale, clamp, truncate: each rounds monotonically), so a relevant key in a lower
    bucket lies below the item's key and one in a higher bucket above it, whatever the rounding. An item thus
    has at least as many relevant keys below it as the buckets below its own hold (a cumulative count per
    bucket), and it walks on from there through the sorted keys while the next one is below its own: one step
    for each relevant key of its own bucket below it, rarely more than one. The keys of higher buckets, and
    the padding, end every walk. Two steps go over the whole block; the few walks left go on as a list.
    """
    rows, n = keys.shape
    width = padded_keys.shape[1] - 1
    # (more buckets than items would only make the table longer to build: each holds under one item already)
    num_buckets = min(_BUCKETS_PER_SLOT * width, n)
    device = keys.device
    # the lowest and highest relevant similarity: those of the first and last real sorted key (a key's low
    # bits hold n - 1 - its column); a row with no relevant key gets (0, 0), any finite range would do
    count = relevant.sum(dim=1)
    ends = torch.stack([torch.zeros_like(count), (count - 1).clamp_(min=0)], dim=1)
    end_columns = ((n - 1) - (padded_keys.gather(1, ends) & _LOW_32)).clamp_(0, n - 1)
    low_high = similarity.gather(1, end_columns).float().masked_fill_((count == 0)[:, None], 0.0)
    low, high = low_high[:, :1], low_high[:, 1:]
    # (no NaN: similarities are finite or -inf, the query itself, which clamps to bucket 0)
    scale = num_buckets / (high - low).clamp_(min=1e-20)
    scaled = similarity.float() if similarity.dtype != torch.float32 else similarity
    scaled.sub_(low).mul_(scale).clamp_(0, num_buckets - 1)
    bucket = _scratch(buffers, "bucket", (rows, n), torch.int64, device).copy_(scaled)
    # int32 tables: half the bytes of int64 to look up; the counts fit easily
    per_bucket = _scratch(buffers, "per_bucket", (rows, num_buckets), torch.int32, device).zero_()
    per_bucket.scatter_add_(1, bucket.gather(1, members), relevant.int())
    in_lower_buckets = torch.cumsum(per_bucket, dim=1, dtype=torch.int32,
                                    out=_scratch(buffers, "lower", (rows, num_buckets), torch.int32, device))
    in_lower_buckets.sub_(per_bucket)
    start = _scratch(buffers, "start", (rows, n), torch.int32, device)
    torch.gather(in_lower_buckets, 1, bucket, out=start)
    below = _scratch(buffers, "below", (rows, n), torch.int64, device).copy_(start)
    next_key = bucket  # the buckets are used up: their buffer holds each walk's next relevant key
    # int64 steps, not bool: both the comparison into them and the addition are faster (0.1 + 0.3 ms against
    # 0.3 + 0.3 for a 64 x 6,000 block, one CPU thread)
    steps = _scratch(buffers, "steps", (rows, n), torch.int64, device)
    for _ in range(_DENSE_STEPS):
        torch.gather(padded_keys, 1, below, out=next_key)
        torch.lt(next_key, keys, out=steps)
        below.add_(steps)
    walking = steps.view(-1).nonzero().squeeze(1)  # one host sync
    if walking.numel():
        flat_below = below.view(-1)
        position = flat_below.index_select(0, walking)
        # flat index of each walk's next relevant key: its row's start in padded_keys + its position
        # (float64 division: exact floors here, and much faster than int64 division on a CPU)
        next_index = walking.double().div_(n).floor_().long().mul_(width + 1).add_(position)
        walking_keys = keys.reshape(-1).index_select(0, walking)
        flat_padded_keys = padded_keys.reshape(-1)
        for _ in range(_SPARSE_STEPS_MAX):
            step = flat_padded_keys.index_select(0, next_index) < walking_keys
            if not bool(step.any()):
                break
            position += step
            next_index += step
            # the walks that stopped leave the list once they are most of it (compacting costs a pass)
            if int(step.sum()) * 2 < step.numel():
                flat_below.index_copy_(0, walking, position)
                going = step.nonzero().squeeze(1)
                walking, position, next_index, walking_keys = (t.index_select(0, going) for t in
                                                               (walking, position, next_index, walking_keys))
        else:
            return None
        flat_below.index_copy_(0, walking, position)
    return below


# Rows of a similarity chunk whose ranks are counted together: small enough for their int64 blocks to stay in
# the CPU's caches (256 x 6,000 int64 is 12 MB), large enough for the per-operation overhead not to show.
_RANK_ROWS = 64


def _rank_block(similarity: Tensor, query: Tensor, sizes: list[int], first: int, labels: Tensor,
                by_class: Tensor, counts: Tensor, offsets: Tensor,
                buffers: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Retrieval's counts for a block of query rows: (rank-1 hits, rank-5 hits, sum of average precisions).

    ``similarity`` ``(rows, n)``: the rows' cosines, the query's own column -inf (overwritten here);
    ``query``: their gallery indices, in order of descending class size (``sizes[first:]``, their numbers of
    relevant items); ``by_class[offsets[c] : offsets[c] + counts[c]]`` are class ``c``'s members.
    """
    device = similarity.device
    rows, n = similarity.shape
    width = sizes[first]
    keys = _order_keys(similarity)
    query_labels = labels[query]
    # the class's members, the query among them (one more slot than the relevant ones)
    slots = torch.arange(width + 1, device=device)
    members = by_class[(offsets[query_labels, None] + slots).clamp_(max=n - 1)]
    relevant = (slots < counts[query_labels, None]) & (members != query[:, None])
    # Relevant keys ascending, then padding (the largest int64, above every real key): the query's own
    # slot, or one past its class, makes the last column padding in every row.
    padded_keys = keys.gather(1, members).masked_fill_(~relevant, _MAX_INT64).sort(dim=1).values
    # below[i, j]: how many of row i's relevant keys lie below item j's key.
    below = None
    if device.type == "cpu" and width >= _BUCKETS_MIN_WIDTH:
        below = _count_below_by_buckets(similarity, keys, padded_keys, members, relevant, buffers)
    if below is None:
        rows_per_slot = [bisect.bisect_left(sizes, -slot, lo=first, hi=first + rows, key=operator.neg) - first
                         for slot in range(width)]  # rows with more than `slot` relevant items
        below = _count_below(padded_keys[:, :width].contiguous(), keys, rows_per_slot)
    # a held block of ones: scatter_add_ reads it faster than an expanded 1 (0.4 against 0.7 ms on a CPU)
    ones = buffers.get("ones")
    if ones is None or ones.numel() < rows * n:
        ones = buffers["ones"] = torch.ones(rows * n, device=device, dtype=torch.int64)
    histogram = torch.zeros(rows, width + 1, device=device, dtype=torch.int64)
    histogram.scatter_add_(1, below, ones[: rows * n].view(rows, n))
    # Item j ranks above slot s's key iff below[j] > s: the rank of slot s is 1 + #{j : below[j] > s}.
    rank = histogram.flip(1).cumsum(1).flip(1)[:, 1:] + 1
    num_relevant = counts[query_labels] - 1
    # slot s (ascending keys) holds the (num_relevant - s)-th relevant item of the ranking
    position = (num_relevant[:, None] - slots[:width]).to(torch.float64)
    ap = torch.where(position > 0, position / rank, 0.0).sum(dim=1) / num_relevant.clamp(min=1)
    has_relevant = num_relevant > 0
    # rank of the best-ranked relevant item (meaningless without one: masked)
    best = rank.gather(1, (num_relevant - 1).clamp(min=0)[:, None])[:, 0]
    # sums of products, not boolean indexing: no host sync on a GPU
    return ((has_relevant & (best == 1)).sum(), (has_relevant & (best <= 5)).sum(), (ap * has_relevant).sum())


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
    # class ids 0..C-1 in the same order (labels may be negative or sparse; bincount needs dense ones)
    labels = torch.unique(labels.to(device=device, dtype=torch.long), return_inverse=True)[1]
    # Gallery indices grouped by class: class c's members are by_class[offsets[c] : offsets[c] + counts[c]].
    by_class = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels)
    offsets = counts.cumsum(0) - counts
    # A query's relevant items are its class's other members. Queries go in order of descending count (the
    # metrics are sums over queries, so the order changes nothing): a chunk then needs only as many slots as
    # its first row, and slot s only the rows before the first one with s or fewer relevant items.
    num_relevant_all = counts[labels] - 1
    order = torch.argsort(num_relevant_all, descending=True, stable=True)
    sizes = num_relevant_all[order].tolist()  # one host sync, before the loop
    hits1 = torch.zeros((), device=device, dtype=torch.long)
    hits5 = torch.zeros_like(hits1)
    ap_sum = torch.zeros((), device=device, dtype=torch.float64)
    buffers: dict[str, Tensor] = {}  # scratch blocks of the rank counts, reused by every block of rows
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        if sizes[start] == 0:  # this chunk and every later one: single-image classes, misses left out of mAP
            break
        query = order[start:stop]
        similarity = gallery[query] @ gallery.T
        # The query itself goes last (cosine >= -1 > -inf) and is never relevant.
        similarity[torch.arange(stop - start, device=device), query] = float("-inf")
        # On a CPU the ranks are counted for a few rows at a time: their blocks then stay in its caches (one
        # matmul of the whole chunk is faster than several small ones). A GPU takes the chunk at once.
        rank_rows = _RANK_ROWS if device.type == "cpu" else chunk_size
        for first in range(start, stop, rank_rows):
            last = min(first + rank_rows, stop)
            if sizes[first] == 0:
                break
            counts_of_rows = _rank_block(similarity[first - start : last - start], order[first:last], sizes,
                                         first, labels, by_class, counts, offsets, buffers)
            hits1 += counts_of_rows[0]
            hits5 += counts_of_rows[1]
            ap_sum += counts_of_rows[2]
    ap_count = sum(size > 0 for size in sizes)
    if ap_count == 0:
        raise ValueError("no query has another item of its class, so retrieval is undefined; "
                         "retrieval needs at least one class with two or more images.")
    return {"rank1": hits1.item() / n, "rank5": hits5.item() / n, "mAP": ap_sum.item() / ap_count}


@torch.no_grad()
def nearest_neighbors(queries: Tensor, gallery: Tensor, k: int, exclude: Tensor | None = None,
                      chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[Tensor, Tensor]:
    """``(indices, similarities)``, both ``(M, k)``: each query's ``k`` most cosine-similar gallery items, best
    first, ties to the lower gallery index (the order retrieval ranks by). ``exclude[i]`` (a gallery index, or -1
    for none) is left out of query ``i``'s list: the query itself when it is in the gallery."""
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries and gallery must be (M, D) and (N, D), got {tuple(queries.shape)} and "
                         f"{tuple(gallery.shape)}.")
    _check_chunk(chunk_size)
    available = gallery.shape[0] - (1 if exclude is not None else 0)
    if not 1 <= k <= available:
        raise ValueError(f"k must be in [1, {available}] (the gallery's other items), got {k}.")
    device = gallery.device
    bank = F.normalize(gallery.float(), dim=1)
    indices, similarities = [], []
    for start in range(0, queries.shape[0], chunk_size):
        similarity = F.normalize(queries[start:start + chunk_size].to(device).float(), dim=1) @ bank.T
        if exclude is not None:
            own = exclude[start:start + chunk_size].to(device=device, dtype=torch.long)
            rows = torch.nonzero(own >= 0).flatten()
            similarity[rows, own[rows]] = float("-inf")  # ranked last, never among the k (k <= N - 1)
        top = _top_columns(similarity, k)
        indices.append(top)
        similarities.append(similarity.gather(1, top))
    return torch.cat(indices).cpu(), torch.cat(similarities).cpu()


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
