"""Metrics of representation quality: weighted kNN accuracy (class and multi-label), leave-one-out retrieval, top-k
accuracy with fixed ties, the multi-label classification metrics."""

from lightning_supcon.metrics.knn import KNNAccuracy, knn_predict
from lightning_supcon.metrics.knn_multilabel import MultilabelKNN, multilabel_votes
from lightning_supcon.metrics.multilabel import multilabel_metrics
from lightning_supcon.metrics.retrieval import RetrievalMetrics, retrieval_metrics
from lightning_supcon.metrics.topk import TopKAccuracy, topk_correct

__all__ = [
    "KNNAccuracy",
    "MultilabelKNN",
    "RetrievalMetrics",
    "TopKAccuracy",
    "knn_predict",
    "multilabel_metrics",
    "multilabel_votes",
    "retrieval_metrics",
    "topk_correct",
]
