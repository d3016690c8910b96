"""Metrics of representation quality: weighted kNN accuracy, leave-one-out retrieval, top-k accuracy with fixed ties."""

from lightning_supcon.metrics.knn import KNNAccuracy, knn_predict
from lightning_supcon.metrics.retrieval import RetrievalMetrics, retrieval_metrics
from lightning_supcon.metrics.topk import TopKAccuracy, topk_correct

__all__ = ["KNNAccuracy", "RetrievalMetrics", "TopKAccuracy", "knn_predict", "retrieval_metrics", "topk_correct"]
