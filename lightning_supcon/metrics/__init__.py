"""Metrics of representation quality: weighted kNN accuracy (class and multi-label), leave-one-out retrieval, top-k
accuracy with fixed ties, the multi-label classification metrics, out-of-distribution detection."""

from lightning_supcon.metrics.knn import KNNAccuracy, knn_predict
from lightning_supcon.metrics.knn_multilabel import MultilabelKNN, multilabel_votes
from lightning_supcon.metrics.multilabel import multilabel_metrics
from lightning_supcon.metrics.ood import KNNOODScore
from lightning_supcon.metrics.ood_functional import energy_score, knn_ood_score, msp_score, ood_metrics
from lightning_supcon.metrics.retrieval import RetrievalMetrics, retrieval_metrics
from lightning_supcon.metrics.topk import TopKAccuracy, topk_correct

__all__ = [
    "KNNAccuracy",
    "KNNOODScore",
    "MultilabelKNN",
    "RetrievalMetrics",
    "TopKAccuracy",
    "energy_score",
    "knn_ood_score",
    "knn_predict",
    "msp_score",
    "multilabel_metrics",
    "multilabel_votes",
    "ood_metrics",
    "retrieval_metrics",
    "topk_correct",
]
