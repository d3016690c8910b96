"""Metrics of representation quality: weighted kNN accuracy and leave-one-out retrieval."""

from lightning_supcon.metrics.knn import KNNAccuracy, knn_predict
from lightning_supcon.metrics.retrieval import RetrievalMetrics, retrieval_metrics

__all__ = ["KNNAccuracy", "RetrievalMetrics", "knn_predict", "retrieval_metrics"]
