"""Out-of-distribution detection maths: per-sample scores and the exact AUROC, AUPR-in/out and FPR at 95% TPR.

Scores are **in-distribution scores**: higher means "more like the training data". The metrics treat the
in-distribution samples as the positive class and count a sample as accepted when its score is ``>=`` the threshold.

- [0] Sun et al., Out-of-Distribution Detection with Deep Nearest Neighbors, ICML 2022,
  https://arxiv.org/abs/2204.06507 (Sec. 3: the negative distance of the L2-normalised feature to its ``k``-th nearest
  neighbour in the normalised training bank; ``k = 50`` for CIFAR-10)
- [1] Hendrycks and Gimpel, A Baseline for Detecting Misclassified and Out-of-Distribution Examples in Neural
  Networks, ICLR 2017, https://arxiv.org/abs/1610.02136 (the maximum softmax probability)
- [2] Liu et al., Energy-based Out-of-distribution Detection, NeurIPS 2020, https://arxiv.org/abs/2010.03759
  (Eq. 1: ``E(x) = -T logsumexp(f(x) / T)``; the score is ``-E``)

The metrics are exact, ties included: the scores are sorted once and tied scores form one threshold. With ``P``
in-distribution and ``N`` out-of-distribution samples, and ``tp_g``, ``fp_g`` of them in the ``g``-th group of tied
scores (descending), ``TP_g`` and ``FP_g`` the counts down to that group:

- AUROC = ``sum_g fp_g (TP_{g-1} + tp_g / 2) / (P N)``: the Mann-Whitney statistic, a tie between an in- and an
  out-of-distribution sample counting one half; an integer ratio, so it is the trapezoidal area of scikit-learn's
  ``roc_auc_score`` without its rounding.
- AUPR-in = ``sum_g (tp_g / P) TP_g / (TP_g + FP_g)``: scikit-learn's ``average_precision_score`` (a step sum, not the
  trapezoid), in-distribution positive; AUPR-out is the same with the out-of-distribution samples positive and the
  scores negated.
- FPR95 = ``FP_g / N`` at the first ``g`` (highest threshold) whose ``TPR = TP_g / P >= 0.95``: the point
  ``argmax(tpr >= 0.95)`` of scikit-learn's ``roc_curve(..., drop_intermediate=False)``, OpenOOD's definition.
  (OpenOOD calls ``roc_curve`` with its default ``drop_intermediate=True``, which can drop that point when it is
  collinear with its neighbours; the code of [0] and of Hendrycks et al. takes the threshold whose recall is
  *nearest* 0.95. All agree whenever a threshold reaches exactly 95% TPR.)
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_supcon.metrics.knn_functional import Candidates, check_knn_args, shard_candidates, similarity_features

OOD_METRIC_NAMES = ("auroc", "aupr_in", "aupr_out", "fpr95")
"""Keys of :func:`ood_metrics`, in order."""

TPR_LEVEL = 0.95
"""The true positive rate of FPR95."""


def kth_distance_score(candidates: Candidates) -> Tensor:
    """The score of [0] from exact neighbours: minus the Euclidean distance to the ``k``-th nearest bank entry.

    For unit vectors ``||z - z'||^2 = 2 - 2 cos(z, z')``, so the ``k``-th nearest is the ``k``-th most similar.

    Args:
        candidates: ``(Q, k)`` neighbours from the exact search, without padding (float64 similarities).

    Returns:
        ``(Q,)`` scores ``-sqrt(max(2 - 2 s_k, 0))`` in ``[-2, 0]``, float64; higher is more in-distribution.
    """
    kth = candidates.similarity.min(dim=1).values  # (Q,) the k-th largest similarity
    return 0.0 - (2 - 2 * kth).clamp(min=0).sqrt()  # 0.0 - x: +0.0, not -0.0, for a query on its neighbour


def knn_ood_score(
    query: Tensor, bank: Tensor, k: int = 50, chunk_size: int = 1024, bank_chunk_size: int = 4096
) -> Tensor:
    """Minus the distance of each normalised query to its ``k``-th nearest neighbour in the normalised bank [0].

    The neighbours are the exact ones of :class:`~lightning_supcon.metrics.KNNAccuracy` (similarities exact in
    float64, :func:`~lightning_supcon.metrics.knn_functional.similarity_features`); ``k`` larger than the bank is
    clamped to the bank size.

    Args:
        query: ``(Q, D)`` features to score (raw encoder outputs: they are L2-normalised here).
        bank: ``(N, D)`` in-distribution (training) features, ``N >= 1``, any floating dtype.
        k: Which neighbour's distance, ``>= 1``.
        chunk_size: Queries per block.
        bank_chunk_size: Bank entries per block.

    Returns:
        ``(Q,)`` float64 in-distribution scores in ``[-2, 0]``.

    Raises:
        ValueError: For bad arguments or shapes, or an empty bank.

    Example:
        >>> bank = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> knn_ood_score(torch.tensor([[2.0, 0.0], [0.6, 0.8], [-1.0, 0.0]]), bank, k=2)
        tensor([ 0.0000, -0.8944, -2.0000], dtype=torch.float64)
    """
    check_knn_args(1, k, 1.0, chunk_size, bank_chunk_size)
    if query.ndim != 2 or bank.ndim != 2 or query.shape[1] != bank.shape[1]:
        raise ValueError(
            f"Expected `query` (Q, D) and `bank` (N, D) with the same D, but got {tuple(query.shape)} and "
            f"{tuple(bank.shape)}"
        )
    if bank.shape[0] == 0:
        raise ValueError("Expected a non-empty `bank`, but got 0 entries")
    k = min(k, bank.shape[0])
    labels = torch.zeros(bank.shape[0], dtype=torch.long, device=bank.device)  # the score needs no labels
    scores = [torch.zeros(0, dtype=torch.float64, device=query.device)]
    for start in range(0, query.shape[0], chunk_size):
        chunk = similarity_features(query[start : start + chunk_size])  # (C, D) float64
        scores.append(kth_distance_score(shard_candidates(chunk, [bank], [labels], 0, k, bank_chunk_size)))
    return torch.cat(scores)


def msp_score(logits: Tensor) -> Tensor:
    """The maximum softmax probability of [1], ``max_c softmax(logits)_c``.

    Args:
        logits: ``(Q, C)`` classifier outputs.

    Returns:
        ``(Q,)`` scores in ``[1/C, 1]``, in at least float32.

    Example:
        >>> msp_score(torch.tensor([[0.0, 0.0], [10.0, 0.0]]))
        tensor([0.5000, 1.0000])
    """
    _check_logits(logits)
    return torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1).max(dim=1).values


def energy_score(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Minus the free energy of [2]: ``-E(x) = T logsumexp(logits / T)``.

    Args:
        logits: ``(Q, C)`` classifier outputs.
        temperature: ``T > 0`` ([2] uses 1).

    Returns:
        ``(Q,)`` scores, in at least float32; higher is more in-distribution.

    Raises:
        ValueError: For a temperature that is not positive, or logits that are not ``(Q, C)``.

    Example:
        >>> energy_score(torch.tensor([[0.0, 0.0]]))
        tensor([0.6931])
    """
    if not temperature > 0:
        raise ValueError(f"Expected argument `temperature` to be > 0, but got {temperature}")
    _check_logits(logits)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return temperature * torch.logsumexp(logits / temperature, dim=1)


def _check_logits(logits: Tensor) -> None:
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"Expected `logits` of shape (Q, C) with C >= 1, but got {tuple(logits.shape)}")


def _tied_groups(scores: Tensor, positive: Tensor) -> tuple[Tensor, Tensor]:
    """``(TP_g, FP_g)``: cumulative positive and negative counts at the end of each group of tied scores, the
    groups in descending score order (int64, ``(G,)`` each)."""
    order = scores.argsort(descending=True)
    ranked, hits = scores[order], positive[order].long()
    ends = torch.cat([(ranked[1:] != ranked[:-1]).nonzero().squeeze(1), ranked.new_tensor([len(ranked) - 1]).long()])
    tp = hits.cumsum(0)[ends]
    return tp, ends + 1 - tp


def _average_precision(tp: Tensor, fp: Tensor) -> Tensor:
    """scikit-learn's average precision from the groups' cumulative counts: ``sum_g (tp_g / P) * precision_g``."""
    gained = torch.diff(tp, prepend=tp.new_zeros(1))  # tp_g
    precision = tp.double() / (tp + fp).double()
    return (gained.double() * precision).sum() / tp[-1].double()


def ood_metrics(in_scores: Tensor, out_scores: Tensor) -> dict[str, Tensor]:
    """AUROC, AUPR-in, AUPR-out and FPR at 95% TPR of in-distribution scores, exact with ties (module docstring).

    Args:
        in_scores: ``(P,)`` scores of in-distribution samples (the positive class), ``P >= 1``.
        out_scores: ``(N,)`` scores of out-of-distribution samples, ``N >= 1``; higher scores mean "more
            in-distribution" for both.

    Returns:
        ``{"auroc", "aupr_in", "aupr_out", "fpr95"}``: float64 scalars in ``[0, 1]`` (FPR95: lower is better).

    Raises:
        ValueError: If a set is empty or not 1-D, or a score is NaN.

    Example:
        >>> metrics = ood_metrics(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([1.0, 0.0]))
        >>> {name: round(value.item(), 4) for name, value in metrics.items()}
        {'auroc': 0.9167, 'aupr_in': 0.9167, 'aupr_out': 0.8333, 'fpr95': 0.5}
    """
    for name, scores in (("in_scores", in_scores), ("out_scores", out_scores)):
        if scores.ndim != 1 or scores.numel() == 0:
            raise ValueError(
                f"Expected `{name}` of shape (n,) with n >= 1 (both in- and out-of-distribution samples are needed), "
                f"but got {tuple(scores.shape)}"
            )
        if scores.isnan().any():
            raise ValueError(f"Expected `{name}` without NaN, but got {int(scores.isnan().sum())} NaN scores")
    scores = torch.cat([in_scores.double(), out_scores.to(in_scores.device).double()])
    positive = torch.arange(len(scores), device=scores.device) < len(in_scores)  # in-distribution first
    tp, fp = _tied_groups(scores, positive)  # (G,) each
    num_in, num_out = int(tp[-1]), int(fp[-1])
    gained_tp, gained_fp = (torch.diff(x, prepend=x.new_zeros(1)) for x in (tp, fp))
    twice_area = (gained_fp * (2 * (tp - gained_tp) + gained_tp)).sum()  # integer: 2 * Mann-Whitney U
    first = int((tp.double() / num_in >= TPR_LEVEL).nonzero()[0, 0])  # tpr as scikit-learn's roc_curve
    out_tp, out_fp = _tied_groups(-scores, ~positive)
    return {
        "auroc": twice_area.double() / (2.0 * num_in * num_out),
        "aupr_in": _average_precision(tp, fp),
        "aupr_out": _average_precision(out_tp, out_fp),
        "fpr95": fp[first].double() / num_out,
    }
