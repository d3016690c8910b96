"""Out-of-distribution detection by the distance to the ``k``-th nearest training feature [0], over a sharded bank.

- [0] Sun et al., Out-of-Distribution Detection with Deep Nearest Neighbors, ICML 2022,
  https://arxiv.org/abs/2204.06507

Each query is scored by minus the distance of its L2-normalised feature to the ``k``-th nearest entry of the
normalised training bank (:func:`~lightning_supcon.metrics.ood_functional.kth_distance_score`); the scores of the
in-distribution and out-of-distribution queries give AUROC, AUPR-in/out and FPR95, exactly
(:func:`~lightning_supcon.metrics.ood_functional.ood_metrics`). The neighbour search is
:class:`~lightning_supcon.metrics.KNNAccuracy`'s: each rank holds only its shard of the bank, the ranks all-gather
query chunks and merge their shards' candidates, so every query's ``k``-th distance is the one of one process
holding the whole bank, ties included.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics.utilities import rank_zero_warn

from lightning_supcon.metrics.knn import BankDtype, KNNAccuracy
from lightning_supcon.metrics.ood_functional import kth_distance_score, ood_metrics


class KNNOODScore(KNNAccuracy):
    """AUROC, AUPR-in, AUPR-out and FPR95 of the ``k``-th nearest neighbour distance score of [0], over all ranks.

    Call ``update(features, bank=True)`` with in-distribution reference features (the training set, embedded without
    augmentation) and ``update(features, is_ood)`` with the samples to score, ``is_ood`` 1 (or ``True``) for
    out-of-distribution samples, 0 for in-distribution ones (the positive class of the metrics). Under DDP each rank
    keeps only its shard of the bank, as :class:`~lightning_supcon.metrics.KNNAccuracy` does (the same exact
    search, the same memory per rank), and every rank returns the same global metrics.

    Args:
        k: Which neighbour's distance ([0]: 50 on CIFAR-10; 1000 on ImageNet with 1% of its training set).
        chunk_size: Global queries per step of ``compute``.
        bank_dtype: Storage dtype of the bank entries (see :class:`~lightning_supcon.metrics.KNNAccuracy`).
        bank_chunk_size: Bank entries per block when scanning a shard.
        **kwargs: Passed to ``torchmetrics.Metric`` (see :class:`~lightning_supcon.metrics.KNNAccuracy`).

    Raises:
        ValueError: For bad arguments or shapes; in ``compute``, when the bank or either set of queries is empty
            (over all ranks) or ``is_ood`` is not 0/1.

    Example:
        >>> metric = KNNOODScore(k=1)
        >>> metric.update(torch.tensor([[1.0, 0.0], [0.8, 0.6]]), bank=True)
        >>> metric.update(torch.tensor([[1.0, 0.1], [0.6, 0.8], [0.0, 1.0]]), torch.tensor([0, 0, 1]))
        >>> {name: round(value.item(), 4) for name, value in metric.compute().items()}
        {'auroc': 1.0, 'aupr_in': 1.0, 'aupr_out': 1.0, 'fpr95': 0.0}
    """

    higher_is_better = None  # type: ignore[assignment]  # AUROC and AUPR: higher; FPR95: lower (torchmetrics: None)

    def __init__(
        self,
        k: int = 50,
        chunk_size: int = 1024,
        bank_dtype: BankDtype | None = None,
        bank_chunk_size: int = 4096,
        **kwargs: Any,
    ) -> None:
        super().__init__(2, k, 1.0, chunk_size, bank_dtype, bank_chunk_size, **kwargs)  # labels: 0 in, 1 out
        self._warned_k = False  # the warning of a k beyond the bank, said once per metric

    def update(self, features: Tensor, is_ood: Tensor | None = None, bank: bool = False, stored: bool = False) -> None:
        """Store ``features`` ``(B, D)`` as bank entries (``bank=True``, no ``is_ood``) or as queries with their
        ``is_ood`` ``(B,)`` (0/1 or bool).

        ``stored=True`` (bank entries only): ``features`` are already in the bank's storage form, L2-normalised rows
        in ``bank_dtype`` (any dtype when it is ``None``), e.g. the tensor a :class:`~lightning_supcon.metrics.
        KNNAccuracy` of the same ``bank_dtype`` stored from them: they are kept as they are, not copied, so the two
        metrics share one bank in memory. ``ValueError`` for another dtype, a shape that is not ``(B, D)``, or
        ``stored`` with queries.
        """
        if bank == (is_ood is not None):
            raise ValueError(
                "Expected `is_ood` for queries and none for bank entries (the bank is in-distribution), but got "
                f"bank={bank} and is_ood={'None' if is_ood is None else tuple(is_ood.shape)}"
            )
        labels = torch.zeros(features.shape[:1], dtype=torch.long, device=features.device) if is_ood is None else is_ood
        if not stored:
            super().update(features, labels, bank)
            return
        if not bank or features.ndim != 2 or self.bank_dtype not in (None, features.dtype):
            raise ValueError(
                f"Expected `stored=True` with bank entries (B, D) of dtype {self.bank_dtype or 'any'}, but got "
                f"bank={bank} and {features.dtype} features of shape {tuple(features.shape)}"
            )
        self.bank_features.append(features.detach())  # detach: a view, no copy
        self.bank_labels.append(labels)

    def has_data(self) -> bool:
        """Whether some rank holds a bank entry, some rank an in-distribution query and some rank an
        out-of-distribution one, i.e. whether ``compute`` can run (queries whose ``is_ood`` is not 0 count as out, so
        a bad value reaches ``compute``'s check).

        The same answer on every rank: under DDP it all-gathers, so **every rank must call it**, including a rank
        that holds nothing (a rank that skipped it would leave the others waiting in the gather).
        """
        gather = self._gather()
        queries = sum(labels.shape[0] for labels in self.query_labels)
        inside = sum(int((labels == 0).sum()) for labels in self.query_labels)
        bank = sum(features.shape[0] for features in self.bank_features)
        local = torch.tensor([bank, inside, queries - inside], dtype=torch.long, device=self.device)
        total = torch.stack(gather(local)).sum(dim=0) if gather else local
        if 0 < int(total[0]) < self.k and not self._warned_k:
            self._warned_k = True  # the bank is the same data set every epoch
            rank_zero_warn(
                f"OOD score: k = {self.k} is more than the {int(total[0])} bank entries, so each sample is scored by "
                "the farthest of them; choose k well below the training samples per class (`online.ood_k`)."
            )
        return bool((total > 0).all())

    def scores(self) -> tuple[Tensor, Tensor]:
        """The in-distribution score of every query over all ranks, and which ones are out-of-distribution.

        Returns:
            ``(scores (Q,) float64, is_ood (Q,) bool)``, the queries in the order of one process holding them all:
            rank 0's first, each rank's in the order of its updates. Under DDP every rank must call it.
        """
        stats, steps = self._neighbour_steps()
        parts = [(kth_distance_score(neighbours), labels.bool()) for neighbours, labels in steps]
        scores = torch.cat([torch.zeros(0, dtype=torch.float64, device=stats.device), *(s for s, _ in parts)])
        is_ood = torch.cat([torch.zeros(0, dtype=torch.bool, device=stats.device), *(o for _, o in parts)])
        order = self._step_order(stats[:, 1].tolist()).to(scores.device)
        out_scores, out_is_ood = torch.empty_like(scores), torch.empty_like(is_ood)
        out_scores[order], out_is_ood[order] = scores, is_ood
        return out_scores, out_is_ood

    def _step_order(self, counts: list[int]) -> Tensor:
        """Where each query of the steps of ``_walk`` stands among all ranks' queries in rank order: per step, each
        rank's next ``ceil(chunk_size / world)`` queries, the ranks in order."""
        per_rank = math.ceil(self.chunk_size / len(counts))
        offsets = [sum(counts[:rank]) for rank in range(len(counts))]
        steps = max(math.ceil(count / per_rank) for count in counts)
        parts = [
            torch.arange(offset + min(count, step * per_rank), offset + min(count, (step + 1) * per_rank))
            for step in range(steps)
            for offset, count in zip(offsets, counts, strict=True)
        ]
        return torch.cat([torch.zeros(0, dtype=torch.long), *parts])

    def compute(self) -> dict[str, Tensor]:
        """``{"auroc", "aupr_in", "aupr_out", "fpr95"}`` of the scores of every rank's queries (float64 scalars, see
        :func:`~lightning_supcon.metrics.ood_functional.ood_metrics`). Under DDP every rank must call it."""
        scores, is_ood = self.scores()
        return ood_metrics(scores[~is_ood], scores[is_ood])
