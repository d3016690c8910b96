"""The metrics of multi-label classifiers and of the multi-label kNN, from torchmetrics' multilabel family.

A multi-label sample has ``num_labels`` independent 0/1 targets; a classifier gives each a probability (a sigmoid
of its logit, or a kNN vote share). Three numbers, each averaged as is usual for multi-label benchmarks (e.g. the
per-class mAP of PASCAL VOC and MS-COCO classification):

- ``map``: mean over labels of the average precision of ranking the samples by that label's probability
  (``MultilabelAveragePrecision``, ``average="macro"``, exact: no binning). Independent of any threshold. A label
  with no positive sample scores 0 (torchmetrics' convention, with a warning).
- ``f1``: mean over labels of the F1 score of the predictions :func:`predicted_labels` (``MultilabelF1Score``,
  ``average="macro"``); a label never present nor predicted scores 0.
- ``accuracy``: the fraction of (sample, label) pairs predicted right (``MultilabelAccuracy``, ``average="micro"``;
  one minus the Hamming loss).

One decision rule everywhere, **inclusive**: a label is predicted when its probability is ``>= 0.5``
(:func:`predicted_labels`). torchmetrics' multilabel metrics threshold floats with ``preds > threshold``
(``_multilabel_stat_scores_format``), so they get our 0/1 predictions instead of the probabilities. Inclusive
because the multi-label kNN's probability is a weighted vote share: with two equally weighted neighbours of which
one has the label, ``p = 0.5`` exactly, and a tie keeps the label (as a sigmoid's logit 0 does).

``map`` keeps every probability of the epoch (``num_samples x num_labels`` floats), so training metrics leave it out.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MultilabelAccuracy, MultilabelAveragePrecision, MultilabelF1Score

THRESHOLD = 0.5
"""A label is predicted when its probability is at least this (inclusive, see :func:`predicted_labels`)."""


def check_num_labels(num_labels: int) -> None:
    """Raise a one-line ``ValueError`` unless ``num_labels >= 2``: torchmetrics' multilabel metrics need two labels
    (one 0/1 target per sample is a binary task: pass class labels ``0``/``1`` with ``num_classes=2`` instead).

    Example:
        >>> check_num_labels(1)
        Traceback (most recent call last):
        ...
        ValueError: Expected `num_labels` >= 2 for multi-label metrics, but got 1; a single 0/1 target is a binary ...
    """
    if num_labels < 2:
        raise ValueError(
            f"Expected `num_labels` >= 2 for multi-label metrics, but got {num_labels}; a single 0/1 target is a "
            "binary task: use class labels with num_classes=2 (multilabel=False)."
        )


def predicted_labels(probabilities: Tensor) -> Tensor:
    """The multi-label decision rule: label ``l`` is predicted when ``p_l >= THRESHOLD`` (0.5 counts as predicted).

    Args:
        probabilities: ``(N, L)`` in ``[0, 1]``.

    Returns:
        ``(N, L)`` int64 0/1 predictions.

    Example:
        >>> import torch
        >>> predicted_labels(torch.tensor([[0.5, 0.4999, 0.9]]))
        tensor([[1, 0, 1]])
    """
    return (probabilities >= THRESHOLD).long()


class _InclusiveF1(MultilabelF1Score):
    """``MultilabelF1Score`` of :func:`predicted_labels` (torchmetrics alone would predict ``p > 0.5``)."""

    def update(self, preds: Tensor, target: Tensor) -> None:
        super().update(predicted_labels(preds), target)


class _InclusiveAccuracy(MultilabelAccuracy):
    """``MultilabelAccuracy`` of :func:`predicted_labels` (torchmetrics alone would predict ``p > 0.5``)."""

    def update(self, preds: Tensor, target: Tensor) -> None:
        super().update(predicted_labels(preds), target)


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
        >>> {name: value.item() for name, value in multilabel_metrics(2, ranking=False)(
        ...     torch.tensor([[0.5, 0.9]]), torch.tensor([[1, 1]])).items()}  # p = 0.5 predicts the label
        {'accuracy': 1.0, 'f1': 1.0}

    Raises:
        ValueError: For ``num_labels < 2`` (:func:`check_num_labels`).
    """
    check_num_labels(num_labels)
    metrics: dict[str, Any] = {
        "f1": _InclusiveF1(num_labels, average="macro", **kwargs),
        "accuracy": _InclusiveAccuracy(num_labels, average="micro", **kwargs),
    }
    if ranking:
        metrics["map"] = MultilabelAveragePrecision(num_labels, average="macro", thresholds=None, **kwargs)
    return MetricCollection(metrics)
