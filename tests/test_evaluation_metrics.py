"""k-NN and retrieval metrics on hand-made cases with answers worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import average_precision_score

from ssl_zoo.evaluation import (
    knn_accuracy,
    knn_predict,
    metrics,
    queries_without_positive,
    retrieval_metrics,
    topk_accuracy,
)

E1, E2, E3 = torch.eye(3)


def test_retrieval_ties_and_single_image_class():
    # Items 0/1 are identical, as are 2/3; item 4 is the only member of class 2.
    features = torch.stack([E1, E1, E2, E2, E3])
    labels = torch.tensor([0, 1, 0, 1, 2])
    # Query 0 ranks 1 (sim 1) then the sim-0 tie 2, 3, 4 in index order: relevant at rank 2 -> AP 1/2.
    # Query 1 ranks 0, 2, 3, 4: relevant (class 1) at rank 3 -> AP 1/3. Queries 2, 3 mirror 0, 1.
    # Query 4 has no relevant item: a miss, left out of mAP.
    m = retrieval_metrics(features, labels)
    assert m["rank1"] == 0.0
    assert m["rank5"] == pytest.approx(4 / 5)
    assert m["mAP"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2 + 1 / 3) / 4)
    assert queries_without_positive(labels) == 1


def test_retrieval_tie_goes_to_lower_index():
    features = torch.stack([E1, E2, E2])
    # Query 0 sees items 1 and 2 tied at similarity 0: item 1 (its class) ranks first, a hit.
    # Queries 1 and 2 find each other (similarity 1) but differ in class: misses.
    assert retrieval_metrics(features, torch.tensor([0, 0, 1]))["rank1"] == pytest.approx(1 / 3)
    # Same features, item 1 now of another class: query 0 misses at rank 1, finds item 2 at rank 2.
    m = retrieval_metrics(features, torch.tensor([0, 1, 0]))
    # query 0: [1 miss, 2 hit] AP 1/2; query 1: [2 (sim 1) miss, 0 miss] no relevant; query 2: [1 miss, 0 hit] AP 1/2
    assert m["rank1"] == 0.0
    assert m["rank5"] == pytest.approx(2 / 3)
    assert m["mAP"] == pytest.approx(1 / 2)


def test_retrieval_perfect_clusters_and_scale_invariance():
    features = torch.stack([E1, 2 * E1, E2 + 0.1 * E1, 5 * E2])
    labels = torch.tensor([3, 3, 7, 7])
    m = retrieval_metrics(features, labels)
    assert m == {"rank1": 1.0, "rank5": 1.0, "mAP": 1.0}


def test_retrieval_matches_sklearn_average_precision_and_is_chunk_invariant():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(37, 8, generator=g)
    labels = torch.randint(0, 5, (37,), generator=g)
    normed = torch.nn.functional.normalize(features, dim=1)
    sims = normed @ normed.T
    aps, r1, r5 = [], 0, 0
    for i in range(37):
        others = [j for j in range(37) if j != i]
        relevant = (labels[others] == labels[i]).numpy()
        scores = sims[i, others].numpy()
        order = scores.argsort()[::-1]
        r1 += bool(relevant[order[0]])
        r5 += bool(relevant[order[:5]].any())
        if relevant.any():
            aps.append(average_precision_score(relevant, scores))
    full = retrieval_metrics(features, labels, chunk_size=1000)
    assert full["rank1"] == pytest.approx(r1 / 37)
    assert full["rank5"] == pytest.approx(r5 / 37)
    assert full["mAP"] == pytest.approx(sum(aps) / len(aps), abs=1e-6)
    for chunk in (1, 5, 36):
        assert retrieval_metrics(features, labels, chunk_size=chunk) == pytest.approx(full)


def test_retrieval_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one class with two"):
        retrieval_metrics(torch.eye(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="one label per feature"):
        retrieval_metrics(torch.eye(3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(torch.tensor([[float("nan")], [1.0]]), torch.tensor([0, 0]))


def test_knn_similarity_weighting_and_temperature():
    query = E1[None]
    # One close neighbour of class 0, two farther ones of class 1.
    train = torch.stack([E1 + 0.05 * E2, E1 + 0.9 * E2, E1 + 1.0 * E2])
    labels = torch.tensor([0, 1, 1])
    assert knn_predict(train, labels, query, k=3, temperature=0.07).tolist() == [0]
    # A huge temperature makes the votes nearly equal: the majority wins.
    assert knn_predict(train, labels, query, k=3, temperature=1e4).tolist() == [1]
    # Vote weights exp(s/T), worked by hand for the first case.
    s = torch.nn.functional.normalize(train, dim=1) @ E1
    assert math.exp(s[0] / 0.07) > math.exp(s[1] / 0.07) + math.exp(s[2] / 0.07)


def test_knn_ties():
    train = torch.stack([E1, E1, E2])
    labels = torch.tensor([1, 0, 0])
    # k=1: the two identical neighbours tie; the lower training index (class 1) wins.
    assert knn_predict(train, labels, E1[None], k=1).tolist() == [1]
    # k=2: one vote each with equal weight; the tie goes to the lower class index.
    assert knn_predict(train, labels, E1[None], k=2).tolist() == [0]
    assert knn_accuracy(train, labels, E1[None].repeat(2, 1), torch.tensor([1, 0]), k=1) == 0.5


def test_knn_chunked_equals_unchunked_and_k_capped():
    g = torch.Generator().manual_seed(1)
    train, test = torch.randn(60, 16, generator=g), torch.randn(23, 16, generator=g)
    train_l, test_l = torch.randint(0, 4, (60,), generator=g), torch.randint(0, 4, (23,), generator=g)
    full = knn_predict(train, train_l, test, k=20, chunk_size=1000)
    for chunk in (1, 4, 22):
        assert torch.equal(knn_predict(train, train_l, test, k=20, chunk_size=chunk), full)
    acc = knn_accuracy(train, train_l, test, test_l, k=200)  # k larger than the bank: uses all 60
    assert acc == knn_accuracy(train, train_l, test, test_l, k=60)
    assert 0.0 <= acc <= 1.0


def test_knn_separable_clusters_are_perfect():
    g = torch.Generator().manual_seed(2)
    centres = torch.randn(5, 32, generator=g) * 5
    train_l, test_l = torch.arange(5).repeat(10), torch.arange(5).repeat(4)
    train = centres[train_l] + 0.1 * torch.randn(50, 32, generator=g)
    test = centres[test_l] + 0.1 * torch.randn(20, 32, generator=g)
    assert knn_accuracy(train, train_l, test, test_l, k=20) == 1.0


def test_knn_rejects_bad_input():
    with pytest.raises(ValueError, match="num_classes"):
        knn_accuracy(torch.eye(3), torch.tensor([0, 1, 2]), torch.eye(3), torch.tensor([0, 1, 2]), num_classes=2)
    with pytest.raises(ValueError, match="test features must be"):
        knn_accuracy(torch.eye(3), torch.tensor([0, 1, 2]), torch.ones(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer class"):
        knn_accuracy(torch.eye(3), torch.tensor([0.0, 1.0, 2.0]), torch.eye(3), torch.tensor([0, 1, 2]))


def test_topk_accuracy():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    labels = torch.tensor([1, 1, 2])
    # Row 1 ties classes 0 and 1: the stable order ranks class 0 first, so top-1 misses it.
    acc = topk_accuracy(logits, labels, ks=(1, 2, 5))
    assert acc[1] == pytest.approx(1 / 3)
    assert acc[2] == 1.0 and acc[5] == 1.0


# -- the top-k / rank-count implementation against a full stable sort of every row ---------------------------

def _tied_features(n: int, generator: torch.Generator) -> torch.Tensor:
    """Rows with four entries of +-1 among 8 (norm exactly 2) and a few zero rows: every cosine is a multiple
    of 1/4, computed exactly in any summation order, so there are ties everywhere (zero rows give +-0.0)."""
    signs = torch.randint(0, 2, (n, 8), generator=generator).float() * 2 - 1
    keep = torch.rand(n, 8, generator=generator).argsort(dim=1) < 4
    features = signs * keep
    features[torch.randperm(n, generator=generator)[: max(1, n // 20)]] = 0.0
    return features


def _labels_with_singletons(n: int, classes: int, singletons: int, generator: torch.Generator) -> torch.Tensor:
    labels = torch.randint(0, classes, (n,), generator=generator)
    labels[torch.randperm(n, generator=generator)[:singletons]] = torch.arange(100, 100 + singletons)
    return labels


def _reference_knn(train, train_labels, test, k, temperature, chunk):
    bank = torch.nn.functional.normalize(train.float(), dim=1)
    num_classes = int(train_labels.max()) + 1
    preds = []
    for start in range(0, test.shape[0], chunk):
        sim = torch.nn.functional.normalize(test[start:start + chunk].float(), dim=1) @ bank.T
        order = torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :min(k, bank.shape[0])]
        votes = torch.zeros(sim.shape[0], num_classes)
        votes.scatter_add_(1, train_labels[order], (sim.gather(1, order) / temperature).exp())
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def _reference_retrieval(features, labels, chunk):
    """Leave-one-out retrieval from a full stable sort of each row; average precision in float64."""
    n = features.shape[0]
    gallery = torch.nn.functional.normalize(features.float(), dim=1)
    hits1 = hits5 = 0
    aps = []
    for start in range(0, n, chunk):
        sim = gallery[start:start + chunk] @ gallery.T
        for row in range(sim.shape[0]):
            sim[row, start + row] = float("-inf")
        order = torch.sort(sim, dim=1, descending=True, stable=True).indices[:, : n - 1]
        for row in range(sim.shape[0]):
            relevant = (labels[order[row]] == labels[start + row]).tolist()
            hits1 += relevant[0]
            hits5 += any(relevant[:5])
            ranks = [r + 1 for r, hit in enumerate(relevant) if hit]
            if ranks:
                aps.append(sum(i / r for i, r in enumerate(ranks, start=1)) / len(ranks))
    return {"rank1": hits1 / n, "rank5": hits5 / n, "mAP": sum(aps) / len(aps)}


def test_order_keys_reproduce_the_stable_sort_with_ties_signed_zeros_and_inf():
    from ssl_zoo.evaluation.metrics import _order_keys, _top_columns

    g = torch.Generator().manual_seed(3)
    sim = torch.randint(-3, 4, (40, 300), generator=g).float() / 4
    sim[sim == 0] = torch.where(torch.rand(int((sim == 0).sum()), generator=g) < 0.5, -0.0, 0.0)
    sim[torch.arange(40), torch.arange(40) * 7] = float("-inf")
    assert torch.signbit(sim[sim == 0]).any() and not torch.signbit(sim[sim == 0]).all()
    stable = torch.sort(sim, dim=1, descending=True, stable=True).indices
    assert torch.equal(torch.sort(_order_keys(sim), dim=1, descending=True).indices, stable)
    for k in (1, 5, 20, 299, 300):
        assert torch.equal(_top_columns(sim, k), stable[:, :k])
    # half-precision similarities (a matmul under autocast) keep their order and ties
    assert torch.equal(_top_columns(sim.bfloat16(), 300), torch.sort(sim.bfloat16(), dim=1, descending=True,
                                                                      stable=True).indices)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knn_equals_full_sort_reference_on_tied_features(seed):
    g = torch.Generator().manual_seed(seed)
    train, test = _tied_features(150, g), _tied_features(41, g)
    train_l = _labels_with_singletons(150, 6, 5, g)
    for k in (1, 4, 20, 200):
        expected = _reference_knn(train, train_l, test, k, 0.07, chunk=41)
        for chunk in (41, 8):  # exact cosines: the chunking cannot change a similarity
            assert torch.equal(knn_predict(train, train_l, test, k=k, chunk_size=chunk), expected)


def test_knn_equals_full_sort_reference_on_float_features():
    g = torch.Generator().manual_seed(4)
    train, test = torch.randn(300, 12, generator=g), torch.randn(70, 12, generator=g)
    train = torch.cat([train, train[:50]])  # exact duplicates: tied neighbours
    train_l = torch.randint(0, 7, (350,), generator=g)
    for k in (1, 20, 200):
        assert torch.equal(knn_predict(train, train_l, test, k=k, chunk_size=16),
                           _reference_knn(train, train_l, test, k, 0.07, chunk=16))


# The three ways of counting ranks: comparison passes (classes of up to 64 images), a binary search (wider
# classes on a GPU, and the fallback) and value buckets (wider classes on a CPU; walks never cut short here,
# so that they run through the many ties of these features instead of falling back).
COUNTING = {
    "passes": {"_COMPARE_PASSES_MAX": 64, "_BUCKETS_MIN_WIDTH": 10**9},
    "search": {"_COMPARE_PASSES_MAX": 0, "_BUCKETS_MIN_WIDTH": 10**9},
    "buckets": {"_BUCKETS_MIN_WIDTH": 1, "_SPARSE_STEPS_MAX": 10**6},
    "buckets, few rows a block": {"_BUCKETS_MIN_WIDTH": 1, "_SPARSE_STEPS_MAX": 10**6, "_RANK_ROWS": 5},
}


@pytest.mark.parametrize("counting", list(COUNTING))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_equals_full_sort_reference_on_tied_features(seed, counting, monkeypatch):
    for name, value in COUNTING[counting].items():
        monkeypatch.setattr(metrics, name, value)
    g = torch.Generator().manual_seed(seed)
    features = _tied_features(120, g)
    labels = _labels_with_singletons(120, 5, 7, g)
    expected = _reference_retrieval(features, labels, chunk=120)
    for chunk in (120, 1, 16):
        m = retrieval_metrics(features, labels, chunk_size=chunk)
        assert m["rank1"] == expected["rank1"] and m["rank5"] == expected["rank5"]
        assert m["mAP"] == pytest.approx(expected["mAP"], rel=1e-12)
    # Labels are only compared for equality: negative or sparse ids change nothing.
    assert retrieval_metrics(features, labels * 1000 - 7, chunk_size=16) == retrieval_metrics(features, labels,
                                                                                              chunk_size=16)


@pytest.mark.parametrize("counting", list(COUNTING))
def test_retrieval_equals_full_sort_reference_on_float_features(counting, monkeypatch):
    for name, value in COUNTING[counting].items():
        monkeypatch.setattr(metrics, name, value)
    g = torch.Generator().manual_seed(5)
    features = torch.randn(90, 6, generator=g)
    features = torch.cat([features, features[:30]])  # each of these has an identical twin
    labels = _labels_with_singletons(120, 4, 3, g)
    m = retrieval_metrics(features, labels, chunk_size=32)
    expected = _reference_retrieval(features, labels, chunk=32)
    assert m["rank1"] == expected["rank1"] and m["rank5"] == expected["rank5"]
    assert m["mAP"] == pytest.approx(expected["mAP"], rel=1e-12)


@pytest.mark.parametrize("case", ["gaussian", "ties", "two values", "one value", "no relevant"])
def test_bucket_count_is_searchsorted(case):
    """The bucket count gives searchsorted's counts: Gaussian similarities (walks through
    shared buckets), many equal ones (longer walks), two values only (walks longer than the cap: None, and
    exact when let through), rows whose relevant items all have one similarity (an empty range) and rows
    without relevant items; each row with its query's -inf."""
    g = torch.Generator().manual_seed(7)
    rows, n, width = 12, 400, 90
    similarity = torch.randn(rows, n, generator=g)
    if case == "ties":
        similarity = similarity.mul(2).round().div(4)
    if case == "two values":
        similarity = similarity.sign().div(2)
    members = torch.stack([torch.randperm(n - 1, generator=g)[: width + 1].sort().values + 1 for _ in range(rows)])
    if case == "one value":
        similarity.scatter_(1, members, 0.25)
    similarity[:, 0] = float("-inf")
    relevant = torch.rand(rows, width + 1, generator=g) < 0.9
    relevant[:, -1] = False
    if case == "no relevant":
        relevant[::2] = False
    keys = metrics._order_keys(similarity)
    padded_keys = keys.gather(1, members).masked_fill_(~relevant, torch.iinfo(torch.int64).max).sort(dim=1).values
    expected = torch.searchsorted(padded_keys[:, :-1].contiguous(), keys)
    below = metrics._count_below_by_buckets(similarity.clone(), keys, padded_keys, members, relevant, {})
    if case in ("two values", "one value"):  # walks over more equal keys than the cap: the caller searches
        assert below is None
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(metrics, "_SPARSE_STEPS_MAX", n)
            below = metrics._count_below_by_buckets(similarity.clone(), keys, padded_keys, members, relevant, {})
    assert torch.equal(below, expected)


@pytest.mark.parametrize("width", [1, 7, 64, 65, 200])
def test_count_below_is_searchsorted(width):
    """Both ways of counting (comparison passes up to 64 slots, binary search above) give searchsorted's answer,
    with padding (the largest int64) after each row's real keys, rows that skip their padding slots, and keys
    equal to a slot."""
    g = torch.Generator().manual_seed(width)
    rows = 9
    keys = torch.randint(-1000, 1000, (rows, 300), generator=g)
    slots = torch.randint(-1000, 1000, (rows, width), generator=g)
    slots[0, : min(width, 300)] = keys[0, : min(width, 300)]
    slots = slots.sort(dim=1).values
    real = [width - r * width // rows for r in range(rows)]  # descending: row r has real[r] real keys
    for r, count in enumerate(real):
        slots[r, count:] = torch.iinfo(torch.int64).max
    rows_per_slot = [sum(count > s for count in real) for s in range(width)]
    expected = torch.searchsorted(slots, keys)
    assert torch.equal(metrics._count_below(slots, keys), expected)
    assert torch.equal(metrics._count_below(slots, keys, rows_per_slot), expected)


def test_finite_check_tells_overflow_from_nan():
    """The finiteness check sums the features first: a sum that overflows on finite values must not be taken
    for a NaN or inf, and an inf that a sum would hide (inf - inf = NaN) is still caught."""
    huge = torch.tensor([[3e38, 3e38], [3e38, 2e38], [1.0, 0.0]])
    assert retrieval_metrics(huge, torch.tensor([0, 0, 1]))["rank1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="NaN or inf"):
        retrieval_metrics(torch.tensor([[float("inf"), 1.0], [float("-inf"), 1.0]]), torch.tensor([0, 0]))
