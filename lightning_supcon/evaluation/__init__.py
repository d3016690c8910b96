"""Offline evaluation of saved embeddings: kNN, retrieval, clustering and out-of-distribution scores without the
model (see :mod:`lightning_supcon.evaluate` for the command)."""

from lightning_supcon.evaluation.embeddings import Embeddings, EmbeddingsError, check_pair, load_embeddings
from lightning_supcon.evaluation.report import (
    METRICS,
    MULTILABEL_METRICS,
    OOD_METRICS,
    evaluate_embeddings,
    format_table,
    kmeans_scores,
    knn_accuracy,
    multilabel_knn_scores,
    ood_scores,
)

__all__ = [
    "METRICS",
    "MULTILABEL_METRICS",
    "OOD_METRICS",
    "Embeddings",
    "EmbeddingsError",
    "check_pair",
    "evaluate_embeddings",
    "format_table",
    "kmeans_scores",
    "knn_accuracy",
    "load_embeddings",
    "multilabel_knn_scores",
    "ood_scores",
]
