"""Evaluation: feature extraction, k-NN accuracy, retrieval metrics and the linear probe.

Library metrics are fractions in [0, 1]; the benchmark reports (JSON, Markdown)
show percentages. See docs/benchmarks.md for the protocols.
"""
from __future__ import annotations

from ..report import markdown_row
from .cli import configure_parser, load_encoder, run_benchmark, run_cli
from .features import extract_features, make_loader, recipe_split_features
from .linear import LinearProbeCfg, dataset_num_classes, linear_probe, linear_probe_on_features, make_classifier
from .metrics import knn_accuracy, knn_predict, queries_without_positive, retrieval_metrics, topk_accuracy

__all__ = [
    "extract_features", "make_loader", "recipe_split_features", "knn_accuracy", "knn_predict", "retrieval_metrics",
    "queries_without_positive", "topk_accuracy", "LinearProbeCfg", "linear_probe", "linear_probe_on_features",
    "make_classifier", "dataset_num_classes", "configure_parser", "run_cli", "run_benchmark", "load_encoder",
    "markdown_row",
]
