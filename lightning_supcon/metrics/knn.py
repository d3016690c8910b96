"""Weighted k-nearest-neighbour classification of features, the usual monitor of representation quality.

- [0] Wu et al., Unsupervised Feature Learning via Non-Parametric Instance Discrimination, CVPR 2018,
  https://arxiv.org/abs/1805.01978 (Sec. 3.4, weighted kNN)

A query is compared with a bank of labelled features by cosine similarity ``s_i``; its ``k`` most similar bank
entries vote for their class with weight ``exp(s_i / T)``; the class score is the sum of the weights of its votes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightning_supcon.metrics.topk import topk_correct
from lightning_supcon.utils.numerics import compute_dtype


def _check_knn_args(num_classes: int, k: int, temperature: float, chunk_size: int) -> None:
    if num_classes < 1:
        raise ValueError(f"Expected argument `num_classes` to be a positive integer, but got {num_classes}")
    if k < 1:
        raise ValueError(f"Expected argument `k` to be a positive integer, but got {k}")
    if not temperature > 0:
        raise ValueError(f"Expected argument `temperature` to be > 0, but got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"Expected argument `chunk_size` to be a positive integer, but got {chunk_size}")


def knn_predict(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> Tensor:
    """Class scores of the weighted kNN classifier of [0].

    Features are L2-normalised here, so raw encoder outputs may be passed; the similarities are computed in at
    least float32 (float64 inputs stay float64). ``k`` larger than the bank is clamped to the bank size. Queries
    are processed ``chunk_size`` at a time: memory ``chunk_size x N``.

    Args:
        query: ``(Q, D)`` features to classify.
        bank: ``(N, D)`` labelled reference features, ``N >= 1``.
        bank_labels: ``(N,)`` integer labels of ``bank`` in ``[0, num_classes)``.
        num_classes: Number of classes.
        k: Number of neighbours that vote.
        temperature: ``T`` of the weights ``exp(similarity / T)``, > 0.
        chunk_size: Queries per block.

    Returns:
        ``(Q, num_classes)`` scores; the prediction is their argmax (the lowest class index on a tie). A class
        that got no vote scores 0.

    Raises:
        ValueError: For bad arguments or shapes, an empty bank, or labels out of range.

    Example:
        >>> import torch
        >>> bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> bank_labels = torch.tensor([0, 0, 1])
        >>> query = torch.tensor([[1.0, 0.2], [0.1, 1.0]])
        >>> knn_predict(query, bank, bank_labels, num_classes=2, k=2, temperature=1.0).argmax(dim=1)
        tensor([0, 1])
    """
    return _knn_scores_and_votes(query, bank, bank_labels, num_classes, k, temperature, chunk_size)[0]


def _knn_scores_and_votes(
    query: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int, k: int, temperature: float, chunk_size: int
) -> tuple[Tensor, Tensor]:
    """:func:`knn_predict`'s scores ``(Q, num_classes)`` and whether each class got a vote ``(Q, num_classes)``.

    A vote's weight can underflow to 0 (a far neighbour at a small temperature), so "got a vote" is kept apart
    from "scores above 0".
    """
    _check_knn_args(num_classes, k, temperature, chunk_size)
    if query.ndim != 2 or bank.ndim != 2 or query.shape[1] != bank.shape[1]:
        raise ValueError(
            f"Expected `query` (Q, D) and `bank` (N, D) with the same D, but got {tuple(query.shape)} and "
            f"{tuple(bank.shape)}"
        )
    if bank_labels.shape != (bank.shape[0],):
        raise ValueError(f"Expected `bank_labels` of shape ({bank.shape[0]},), but got {tuple(bank_labels.shape)}")
    if bank.shape[0] == 0:
        raise ValueError("Expected a non-empty `bank`, but got 0 entries")
    bank_labels = bank_labels.long()
    if bank_labels.min() < 0 or bank_labels.max() >= num_classes:
        raise ValueError(
            f"Expected `bank_labels` in [0, {num_classes}), but got values in "
            f"[{int(bank_labels.min())}, {int(bank_labels.max())}]"
        )
    k = min(k, bank.shape[0])
    dtype = compute_dtype(torch.promote_types(query.dtype, bank.dtype))
    bank = F.normalize(bank.to(dtype), dim=1)
    query = F.normalize(query.to(dtype), dim=1)
    scores, votes = [], []
    for start in range(0, query.shape[0], chunk_size):
        sim = query[start : start + chunk_size] @ bank.T  # (C, N)
        top_sim, top_idx = sim.topk(k, dim=1)  # (C, k)
        weights = (top_sim / temperature).exp()
        chunk_scores = sim.new_zeros(sim.shape[0], num_classes)
        scores.append(chunk_scores.scatter_add_(1, bank_labels[top_idx], weights))  # (C, num_classes)
        chunk_votes = torch.zeros(sim.shape[0], num_classes, dtype=torch.bool, device=sim.device)
        votes.append(chunk_votes.scatter_(1, bank_labels[top_idx], True))
    if not scores:
        return query.new_zeros(0, num_classes), torch.zeros(0, num_classes, dtype=torch.bool, device=query.device)
    return torch.cat(scores), torch.cat(votes)


class KNNAccuracy(Metric):
    """Top-1 (and top-5) accuracy of the weighted kNN classifier of [0], for validation loops.

    Call ``update(..., bank=True)`` with the labelled reference features (usually the training set, embedded
    without augmentation) and ``update(..., bank=False)`` with the features to classify. States are
    concatenated across processes (``dist_reduce_fx="cat"``), so under DDP every rank classifies the global
    queries against the global bank.

    Args:
        num_classes: Number of classes.
        k: Number of neighbours that vote.
        temperature: ``T`` of the weights ``exp(similarity / T)``.
        chunk_size: Queries per block in ``compute``.
        **kwargs: Passed to ``torchmetrics.Metric``.

    Raises:
        ValueError: For bad arguments; in ``compute``, when the bank or the queries are empty.

    Example:
        >>> import torch
        >>> metric = KNNAccuracy(num_classes=2, k=2, temperature=1.0)
        >>> metric.update(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), torch.tensor([0, 0, 1]), bank=True)
        >>> metric.update(torch.tensor([[1.0, 0.2], [0.1, 1.0]]), torch.tensor([0, 0]), bank=False)
        >>> metric.compute()
        {'top1': tensor(0.5000)}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    query_features: list[Tensor]
    query_labels: list[Tensor]
    bank_features: list[Tensor]
    bank_labels: list[Tensor]

    def __init__(
        self,
        num_classes: int,
        k: int = 200,
        temperature: float = 0.07,
        chunk_size: int = 1024,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_knn_args(num_classes, k, temperature, chunk_size)
        self.num_classes = num_classes
        self.k = k
        self.temperature = temperature
        self.chunk_size = chunk_size
        for name in ("query_features", "query_labels", "bank_features", "bank_labels"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, features: Tensor, labels: Tensor, bank: bool) -> None:
        """Store ``features`` ``(B, D)`` and integer ``labels`` ``(B,)`` as bank entries or as queries."""
        if features.ndim != 2 or labels.shape != (features.shape[0],):
            raise ValueError(
                f"Expected `features` (B, D) and `labels` (B,), but got {tuple(features.shape)} and "
                f"{tuple(labels.shape)}"
            )
        features, labels = features.detach(), labels.detach().long()
        if bank:
            self.bank_features.append(features)
            self.bank_labels.append(labels)
        else:
            self.query_features.append(features)
            self.query_labels.append(labels)

    def compute(self) -> dict[str, Tensor]:
        """``{"top1": ...}``, plus ``"top5"`` when ``num_classes >= 5``; fractions in ``[0, 1]``.

        Classes with equal scores are ranked by class index, lowest first; a class that got no vote from the
        ``k`` neighbours is never a correct prediction (with ``k=1`` top-5 is top-1).
        """
        # States are lists of batches, or one tensor once synchronised across processes.
        if len(self.bank_features) == 0 or len(self.query_features) == 0:
            raise ValueError(
                "Expected both bank entries (`update(..., bank=True)`) and queries (`update(..., bank=False)`) "
                f"before `compute`, but got {len(self.bank_features)} bank and {len(self.query_features)} "
                "query batches"
            )
        labels = dim_zero_cat(self.query_labels).long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"Expected query labels in [0, {self.num_classes}), but got values in "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )
        scores, votes = _knn_scores_and_votes(
            dim_zero_cat(self.query_features),
            dim_zero_cat(self.bank_features),
            dim_zero_cat(self.bank_labels),
            self.num_classes,
            self.k,
            self.temperature,
            self.chunk_size,
        )
        # Voted classes rank above the others even when a vote's weight underflowed to 0.
        scores = scores.masked_fill(~votes, float("-inf"))
        out = {"top1": topk_correct(scores, labels, 1, allowed=votes).float().mean()}
        if self.num_classes >= 5:
            out["top5"] = topk_correct(scores, labels, 5, allowed=votes).float().mean()
        return out
