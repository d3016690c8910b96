"""The weighted kNN of [0] for multi-label data: each label predicted by the weighted vote of the neighbours.

- [0] Wu et al., Unsupervised Feature Learning via Non-Parametric Instance Discrimination, CVPR 2018,
  https://arxiv.org/abs/1805.01978 (Sec. 3.4, weighted kNN)
- [1] Zhang and Zhou, ML-KNN: A lazy learning approach to multi-label learning, Pattern Recognition 40(7), 2007
  (kNN per label on multi-hot neighbours)

A query's ``k`` most similar bank entries (cosine similarity ``s_i``, the same exact neighbours as
:class:`~lightning_supcon.metrics.KNNAccuracy`, sharded bank included) vote with weight ``exp(s_i / T)``, as in [0];
the probability of label ``l`` is the weighted share of the neighbours that have it,
``p_l = sum_i w_i y_il / sum_i w_i``, and the label is predicted when ``p_l >= 0.5`` (a weighted majority; [1]
counts neighbours the same way, with a Bayesian decision instead of the majority). The scores are rated with
:func:`~lightning_supcon.metrics.multilabel.multilabel_metrics` (``map``, ``f1``, ``accuracy``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_supcon.metrics.knn import KNNAccuracy
from lightning_supcon.metrics.knn_functional import Candidates
from lightning_supcon.metrics.multilabel import check_num_labels, multilabel_metrics


def multilabel_votes(candidates: Candidates, temperature: float) -> Tensor:
    """Label probabilities ``p_l = sum_i w_i y_il / sum_i w_i`` with ``w_i = exp(s_i / T)`` over the neighbours.

    The weights are normalised as a softmax over the ``k`` neighbours (shifted by the largest similarity), so no
    weight underflows to a 0/0.

    Args:
        candidates: ``(Q, k)`` neighbours without padding, their ``label`` multi-hot ``(Q, k, L)``.
        temperature: ``T`` > 0.

    Returns:
        ``(Q, L)`` probabilities in ``[0, 1]``, in the similarities' dtype (float64 from the exact search).

    Example:
        >>> similarity = torch.tensor([[0.9, 0.1]], dtype=torch.float64)
        >>> labels = torch.tensor([[[1, 0], [1, 1]]])
        >>> multilabel_votes(Candidates(similarity, torch.tensor([[0, 1]]), labels), temperature=1.0)
        tensor([[1.0000, 0.3100]], dtype=torch.float64)
    """
    similarity, _, label = candidates
    weights = torch.softmax(similarity / temperature, dim=1)  # (Q, k), summing to 1
    return (weights[..., None] * label.to(weights.dtype)).sum(dim=1)


class MultilabelKNN(KNNAccuracy):
    """The weighted kNN classifier of [0] on multi-hot labels, rated by mAP, F1 and label accuracy over all ranks.

    Like :class:`~lightning_supcon.metrics.KNNAccuracy` (whose neighbour search it shares: a bank sharded over
    ranks, exact neighbours, the same result as one process), with labels ``(B, num_labels)`` of 0s and 1s; a
    sample may have no label.

    Args:
        num_labels: Labels per sample (the ``num_classes`` of :class:`KNNAccuracy`).
        **kwargs: The keywords of :class:`KNNAccuracy`, with its defaults and meaning: ``k`` (neighbours that
            vote), ``temperature`` (``T`` of the weights ``exp(similarity / T)``), ``chunk_size``, ``bank_dtype``,
            ``bank_chunk_size``, and those it passes to ``torchmetrics.Metric``. Keywords only: the one positional
            argument is ``num_labels``.

    Raises:
        ValueError: For bad arguments (``num_labels < 2`` included) or label shapes; in ``compute``, when the bank
            or the queries are empty or labels are not 0/1.

    Example:
        >>> metric = MultilabelKNN(num_labels=2, k=2, temperature=1.0)
        >>> bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> metric.update(bank, torch.tensor([[1, 0], [1, 1], [0, 1]]), bank=True)
        >>> metric.update(torch.tensor([[1.0, 0.2], [0.1, 1.0]]), torch.tensor([[1, 0], [0, 1]]), bank=False)
        >>> {name: round(value.item(), 4) for name, value in metric.compute().items()}
        {'accuracy': 0.75, 'f1': 0.8333, 'map': 1.0}
    """

    def __init__(self, num_labels: int, **kwargs: Any) -> None:
        check_num_labels(num_labels)  # at construction, not inside torchmetrics at the first compute
        super().__init__(num_labels, **kwargs)

    def _label_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.num_classes)

    def _label_bound(self) -> int:
        return 2

    def compute(self) -> dict[str, Tensor]:
        """``{"map", "f1", "accuracy"}`` of the kNN's label probabilities over every rank's queries (see
        :mod:`lightning_supcon.metrics.multilabel`). Under DDP every rank must call it (it all-gathers)."""
        _, steps = self._neighbour_steps()
        # Every rank holds every global query's scores: the metrics must not sum them over ranks again.
        metrics = multilabel_metrics(self.num_classes, sync_on_compute=False).to(self.device)
        for neighbours, labels in steps:
            metrics.update(multilabel_votes(neighbours, self.temperature).float(), labels)
        return {name: value for name, value in metrics.compute().items()}
