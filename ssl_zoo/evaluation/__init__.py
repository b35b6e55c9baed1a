"""Evaluation: feature extraction, k-NN accuracy, retrieval metrics and the linear probe.

Library metrics are fractions in [0, 1]; the benchmark reports (JSON, Markdown)
show percentages. See docs/benchmarks.md for the protocols.
"""
from __future__ import annotations

from .features import extract_features, make_loader
from .metrics import knn_accuracy, knn_predict, queries_without_positive, retrieval_metrics, topk_accuracy

__all__ = [
    "extract_features", "make_loader", "knn_accuracy", "knn_predict", "retrieval_metrics",
    "queries_without_positive", "topk_accuracy",
]
