"""Weighted k-nearest-neighbour accuracy, the usual monitor of representation quality, with a bank sharded over ranks.

- [0] Wu et al., Unsupervised Feature Learning via Non-Parametric Instance Discrimination, CVPR 2018,
  https://arxiv.org/abs/1805.01978 (Sec. 3.4, weighted kNN)

A query is compared with a bank of labelled features by cosine similarity ``s_i``; its ``k`` most similar bank
entries vote for their class with weight ``exp(s_i / T)``; the class score is the sum of the weights of its votes.
The maths is in :mod:`lightning_supcon.metrics.knn_functional`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, Literal, get_args

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

from lightning_supcon.metrics.knn_functional import (
    Candidates,
    check_knn_args,
    knn_predict,
    merge_candidates,
    shard_candidates,
    similarity_features,
    weighted_votes,
)
from lightning_supcon.metrics.topk import topk_correct
from lightning_supcon.utils.numerics import compute_dtype

__all__ = ["BankDtype", "KNNAccuracy", "bank_torch_dtype", "knn_predict"]

BankDtype = Literal["float32", "float16", "bfloat16"]
"""Storage dtypes of a kNN bank (``None`` keeps the features' own dtype)."""


def bank_torch_dtype(bank_dtype: BankDtype | None) -> torch.dtype | None:
    """The ``torch.dtype`` of a :data:`BankDtype` name.

    Raises:
        ValueError: For a name not in :data:`BankDtype`.

    Example:
        >>> bank_torch_dtype("bfloat16"), bank_torch_dtype(None)
        (torch.bfloat16, None)
    """
    if bank_dtype is None:
        return None
    if bank_dtype not in get_args(BankDtype):
        raise ValueError(
            f"Expected argument `bank_dtype` to be one of {get_args(BankDtype)} or None, but got {bank_dtype!r}"
        )
    dtype: torch.dtype = getattr(torch, bank_dtype)
    return dtype


Gather = Callable[[Tensor], list[Tensor]]


class KNNAccuracy(Metric):
    """Top-1 (and top-5) accuracy of the weighted kNN classifier of [0], for validation loops, scaling with ranks.

    Call ``update(..., bank=True)`` with the labelled reference features (usually the training set, embedded
    without augmentation) and ``update(..., bank=False)`` with the features to classify.

    Under DDP each rank keeps **only its own shard** of the bank (optionally stored in ``bank_dtype``, e.g.
    ``"bfloat16"``), so memory per rank is about bank / world size. ``compute`` walks the queries in steps: each rank
    contributes its next ``ceil(chunk_size / world)`` queries, which are all-gathered (every rank then holds the same
    ``<= chunk_size`` global queries); each rank finds their ``k`` best candidates in its shard (scanning it
    ``bank_chunk_size`` entries at a time); the candidates ``(similarity, global index, label)``, ``chunk x k`` per
    rank, are all-gathered and merged into the global top ``k``. This is exact: the top ``k`` of the whole bank is
    the top ``k`` of the union of the shards' top ``k``, and ties in similarity are broken by the global bank index
    (shards in rank order), so the neighbours and the vote order do not depend on the split: the predictions equal
    those of one process holding the concatenated bank, ties included. Gathering queries rather than shards is the
    cheap side: per step a rank receives ``chunk_size x D`` features and ``world x chunk_size x k`` candidates, never
    another rank's bank. Every rank merges every query, so all ranks return the same accuracy with no final reduce.

    Args:
        num_classes: Number of classes.
        k: Number of neighbours that vote; bank entries of equal similarity are taken in bank order.
        temperature: ``T`` of the weights ``exp(similarity / T)``.
        chunk_size: Global queries per step of ``compute`` (similarities ``chunk_size x bank_chunk_size``).
        bank_dtype: Storage dtype of the bank entries (``"float32"``, ``"float16"``, ``"bfloat16"``), L2-normalised
            before the cast; ``None`` keeps the features as given. Similarities are exact float64 products of the
            features rounded to ``2^-26`` (:func:`~lightning_supcon.metrics.knn_functional.similarity_features`).
        bank_chunk_size: Bank entries per block when scanning a shard.
        **kwargs: Passed to ``torchmetrics.Metric``. ``sync_on_compute=False`` computes on this rank's bank and
            queries only; ``dist_sync_fn`` and ``process_group`` are used for the gathers of ``compute``.

    Raises:
        ValueError: For bad arguments; in ``compute``, when the bank or the queries are empty (over all ranks) or
            labels are out of range.

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
        bank_dtype: BankDtype | None = None,
        bank_chunk_size: int = 4096,
        **kwargs: Any,
    ) -> None:
        merge_ranks = kwargs.pop("sync_on_compute", True)
        super().__init__(sync_on_compute=False, **kwargs)  # states are never gathered: compute merges candidates
        if not isinstance(merge_ranks, bool):
            raise ValueError(f"Expected keyword argument `sync_on_compute` to be a `bool` but got {merge_ranks}")
        check_knn_args(num_classes, k, temperature, chunk_size, bank_chunk_size)
        self.num_classes = num_classes
        self.k = k
        self.temperature = temperature
        self.chunk_size = chunk_size
        self.bank_dtype = bank_torch_dtype(bank_dtype)
        self.bank_chunk_size = bank_chunk_size
        self.merge_ranks = merge_ranks
        for name in ("query_features", "query_labels", "bank_features", "bank_labels"):
            self.add_state(name, default=[], dist_reduce_fx="cat")  # "cat": what `merge_state` does

    def update(self, features: Tensor, labels: Tensor, bank: bool) -> None:
        """Store ``features`` ``(B, D)`` and integer ``labels`` ``(B,)`` as bank entries or as queries."""
        if features.ndim != 2 or labels.shape != self._label_shape(features.shape[0]):
            expected = "(B,)" if len(self._label_shape(0)) == 1 else f"(B, {self._label_shape(0)[1]})"
            raise ValueError(
                f"Expected `features` (B, D) and `labels` {expected}, but got {tuple(features.shape)} and "
                f"{tuple(labels.shape)}"
            )
        features, labels = features.detach(), labels.detach().long()
        if bank:
            if self.bank_dtype is not None:
                features = F.normalize(features.to(compute_dtype(features.dtype)), dim=1).to(self.bank_dtype)
            self.bank_features.append(features)
            self.bank_labels.append(labels)
        else:
            self.query_features.append(features)
            self.query_labels.append(labels)

    def _gather(self) -> Gather | None:
        """The all-gather of ``compute`` (one tensor per rank, in rank order), or ``None`` in one process."""
        if not (self.merge_ranks and self.distributed_available_fn()):
            return None
        sync: Callable[..., list[Tensor]] = self.dist_sync_fn or gather_all_tensors
        return lambda tensor: sync(tensor, group=self.process_group)

    def has_data(self) -> bool:
        """Whether some rank holds a bank entry and some rank a query, i.e. whether ``compute`` can run.

        The same answer on every rank: under DDP it all-gathers, so **every rank must call it**, including a rank
        whose own shard is empty (a rank that skipped it would leave the others waiting in the gather).
        """
        gather = self._gather()
        local = torch.tensor(
            [sum(f.shape[0] for f in self.bank_features), sum(f.shape[0] for f in self.query_features)],
            dtype=torch.long,
            device=self.device,
        )
        total = torch.stack(gather(local)).sum(dim=0) if gather else local
        return bool(total[0] > 0 and total[1] > 0)

    def _local_stats(self, dim: int) -> Tensor:
        """``[bank rows, query rows, bank batches, query batches, D, min and max of bank labels, of query labels]``."""
        stats = [sum(f.shape[0] for f in self.bank_features), sum(f.shape[0] for f in self.query_features)]
        stats += [len(self.bank_features), len(self.query_features), dim]
        for labels in (self.bank_labels, self.query_labels):
            values = torch.cat([t.flatten() for t in labels]) if labels else torch.zeros(0, dtype=torch.long)
            stats += [int(values.min()), int(values.max())] if values.numel() else [0, 0]
        return torch.tensor(stats, dtype=torch.long, device=self.device)

    def _check(self, stats: Tensor) -> None:
        """Raise the same ``ValueError`` on every rank, from the stats of all ranks ``(W, 9)``."""
        bank_batches, query_batches = int(stats[:, 2].sum()), int(stats[:, 3].sum())
        if bank_batches == 0 or query_batches == 0:
            raise ValueError(
                "Expected both bank entries (`update(..., bank=True)`) and queries (`update(..., bank=False)`) "
                f"before `compute`, but got {bank_batches} bank and {query_batches} query batches"
            )
        for name, column in (("`bank_labels`", 5), ("query labels", 7)):
            low, high = int(stats[:, column].min()), int(stats[:, column + 1].max())
            if low < 0 or high >= self._label_bound():
                raise ValueError(f"Expected {name} in [0, {self._label_bound()}), but got values in [{low}, {high}]")

    def _label_shape(self, batch: int) -> tuple[int, ...]:
        """The shape ``update`` expects of the labels of ``batch`` features: class labels ``(batch,)``."""
        return (batch,)

    def _label_bound(self) -> int:
        """Labels must lie in ``[0, bound)``."""
        return self.num_classes

    def _neighbour_steps(self) -> tuple[Tensor, Iterator[tuple[Candidates, Tensor]]]:
        """Check the states of every rank; then ``(stats (W, 9), steps)``, each step the global top-``k``
        neighbours ``(G, k)`` of that step's ``G`` global queries and the queries' labels. Under DDP every rank must
        walk all the steps (they all-gather)."""
        gather = self._gather()
        tensors = self.query_features + self.bank_features
        dim = tensors[0].shape[1] if tensors else 0
        local = self._local_stats(dim)
        stats = torch.stack(gather(local)) if gather else local[None]  # (W, 9)
        self._check(stats)
        return stats, self._walk(stats, gather)

    def _walk(self, stats: Tensor, gather: Gather | None) -> Iterator[tuple[Candidates, Tensor]]:
        world = stats.shape[0]
        rank = dist.get_rank(self.process_group) if gather and dist.is_available() and dist.is_initialized() else 0
        dim = int(stats[:, 4].max())
        query = dim_zero_cat(self.query_features) if self.query_features else torch.zeros(0, dim, device=self.device)
        query_labels = (
            dim_zero_cat(self.query_labels)
            if self.query_labels
            else query.new_zeros(self._label_shape(0), dtype=torch.long)
        )
        k = min(self.k, int(stats[:, 0].sum()))
        offset = int(stats[:rank, 0].sum())
        per_rank = math.ceil(self.chunk_size / world)
        steps = max(math.ceil(int(rows) / per_rank) for rows in stats[:, 1])
        for step in range(steps):
            chunk = query[step * per_rank : (step + 1) * per_rank]
            labels = query_labels[step * per_rank : (step + 1) * per_rank]
            # Row-wise, so before the gather: every rank sends float64, whatever its features' dtype (an empty
            # rank's zeros are float32 while the others' queries may be bfloat16; a gather needs one dtype).
            chunk = similarity_features(chunk)  # (n, D) float64
            if gather:
                chunk, labels = torch.cat(gather(chunk)), torch.cat(gather(labels))  # (G, D), the same on every rank
            neighbours = shard_candidates(
                chunk,
                self.bank_features,
                self.bank_labels,
                offset,
                k,
                self.bank_chunk_size,
                label_shape=self._label_shape(0)[1:],  # an empty shard pads labels of the shape the others send
            )
            if gather:  # each rank's (G, k) candidates, in rank order = ascending global index
                similarity, index, label = (gather(tensor) for tensor in neighbours)
                parts = [Candidates(*part) for part in zip(similarity, index, label, strict=True)]
                neighbours = merge_candidates(parts, k)
            yield neighbours, labels

    def compute(self) -> dict[str, Tensor]:
        """``{"top1": ...}``, plus ``"top5"`` when ``num_classes >= 5``; fractions in ``[0, 1]``, over all ranks.

        Classes with equal scores are ranked by class index, lowest first; a class that got no vote from the
        ``k`` neighbours is never a correct prediction (with ``k=1`` top-5 is top-1). Under DDP every rank must call
        it (it all-gathers).
        """
        stats, steps = self._neighbour_steps()
        hits = torch.zeros(2, dtype=torch.long, device=stats.device)
        for neighbours, labels in steps:
            scores, votes = weighted_votes(neighbours, self.num_classes, self.temperature)
            # Voted classes rank above the others even when a vote's weight underflowed to 0.
            scores = scores.masked_fill(~votes, float("-inf"))
            hits[0] += topk_correct(scores, labels, 1, allowed=votes).sum()
            if self.num_classes >= 5:
                hits[1] += topk_correct(scores, labels, 5, allowed=votes).sum()
        total = torch.tensor(float(stats[:, 1].sum()), device=stats.device)
        out = {"top1": hits[0].float() / total}
        if self.num_classes >= 5:
            out["top5"] = hits[1].float() / total
        return out
