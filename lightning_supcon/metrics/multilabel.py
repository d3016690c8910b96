"""The metrics of multi-label classifiers and of the multi-label kNN, from torchmetrics' multilabel family.

A multi-label sample has ``num_labels`` independent 0/1 targets; a classifier gives each a probability (a sigmoid
of its logit, or a kNN vote share). Three numbers, each averaged as is usual for multi-label benchmarks (e.g. the
per-class mAP of PASCAL VOC and MS-COCO classification):

- ``map``: mean over labels of the average precision of ranking the samples by that label's probability
  (``MultilabelAveragePrecision``, ``average="macro"``, exact: no binning). Independent of any threshold. A label
  with no positive sample scores 0 (torchmetrics' convention, with a warning).
- ``f1``: mean over labels of the F1 score with the prediction "probability >= 0.5" (``MultilabelF1Score``,
  ``average="macro"``); a label never present nor predicted scores 0.
- ``accuracy``: the fraction of (sample, label) pairs predicted right at 0.5 (``MultilabelAccuracy``,
  ``average="micro"``; one minus the Hamming loss).

``map`` keeps every probability of the epoch (``num_samples x num_labels`` floats), so training metrics leave it out.
"""

from __future__ import annotations

from typing import Any

from torchmetrics import MetricCollection
from torchmetrics.classification import MultilabelAccuracy, MultilabelAveragePrecision, MultilabelF1Score

THRESHOLD = 0.5
"""A label is predicted when its probability is at least this."""


def multilabel_metrics(num_labels: int, ranking: bool = True, **kwargs: Any) -> MetricCollection:
    """``{"map", "f1", "accuracy"}`` of probabilities ``(N, num_labels)`` in ``[0, 1]`` against 0/1 targets.

    Pass probabilities, not logits: torchmetrics applies a sigmoid only when some value lies outside ``[0, 1]``,
    which a batch of logits may not do.

    Args:
        num_labels: Labels per sample.
        ranking: Include ``map`` (stores every probability until ``compute``); ``False`` keeps constant memory.
        **kwargs: Passed to every ``torchmetrics.Metric`` (e.g. ``sync_on_compute=False``).

    Example:
        >>> import torch
        >>> metrics = multilabel_metrics(2).clone(prefix="val/probe_")
        >>> probabilities, targets = torch.tensor([[0.9, 0.6], [0.1, 0.7]]), torch.tensor([[1, 0], [0, 1]])
        >>> {name: round(value.item(), 4) for name, value in metrics(probabilities, targets).items()}
        {'val/probe_accuracy': 0.75, 'val/probe_f1': 0.8333, 'val/probe_map': 1.0}
    """
    metrics: dict[str, Any] = {
        "f1": MultilabelF1Score(num_labels, threshold=THRESHOLD, average="macro", **kwargs),
        "accuracy": MultilabelAccuracy(num_labels, threshold=THRESHOLD, average="micro", **kwargs),
    }
    if ranking:
        metrics["map"] = MultilabelAveragePrecision(num_labels, average="macro", thresholds=None, **kwargs)
    return MetricCollection(metrics)
