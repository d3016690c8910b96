"""Offline evaluation of saved embeddings: kNN, retrieval and clustering scores without the model (see
:mod:`lightning_supcon.evaluate` for the command)."""

from lightning_supcon.evaluation.embeddings import Embeddings, EmbeddingsError, check_pair, load_embeddings
from lightning_supcon.evaluation.report import METRICS, evaluate_embeddings, format_table, kmeans_scores, knn_accuracy

__all__ = [
    "METRICS",
    "Embeddings",
    "EmbeddingsError",
    "check_pair",
    "evaluate_embeddings",
    "format_table",
    "kmeans_scores",
    "knn_accuracy",
    "load_embeddings",
]
