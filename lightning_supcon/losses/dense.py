"""Every SupCon variant with explicit (N x N) masks: the path for what the fused L_out path does not cover.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362 (Eq. 2, 3)
- [1] google-research/supcon (TensorFlow): ``denominator`` and ``positives_cap``
- [2] HobbitLong/SupContrast: positive pairs weighted by a float mask, ``l_i = -sum_j w_ij log p_ij / sum_j w_ij``
- [3] Zhu et al., Balanced Contrastive Learning for Long-Tailed Visual Recognition, CVPR 2022 (class-averaging)

With weights ``w_ij`` in [0, 1] (a binary mask: ``w_ij = 1`` on positives) and ``p_ij = exp(s_ij) / den_i``:
``L_out``: ``l_i = -sum_j w_ij log p_ij / sum_j w_ij``; ``L_in``: ``l_i = -log( sum_j w_ij p_ij / sum_j w_ij )``.
Entries with ``w_ij = 0`` are the negatives; an anchor whose weights sum to 0 has no positive (loss 0, not
counted). ``den_i`` is a sum over every entry but ``i`` (``"all"``), over the negatives and the numerator's
positive (``"one_positive"``), the negatives only (``"only_negatives"``), or over every entry but ``i`` with each
class's exponentials averaged, not summed (``"class_mean"``): ``den_i = sum_c 1/n_c(i) sum_{k in c, k != i}
exp(s_ik)``, ``n_c(i)`` the class's entries in the contrast set (views included) other than ``i`` [3].
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_logsumexp(logits: Tensor, keep: Tensor) -> Tensor:
    """Row-wise log-sum-exp over ``keep``; ``-inf`` for empty rows, with a finite (zero) gradient there."""
    nonempty = keep.any(dim=1)
    masked = logits.masked_fill(~keep, float("-inf"))
    masked = torch.where(nonempty[:, None], masked, torch.zeros_like(masked))
    return torch.where(nonempty, torch.logsumexp(masked, dim=1), torch.full_like(logits[:, 0], float("-inf")))


def class_mean_log_weights(anchor_class: Tensor, contrast_class: Tensor, dtype: torch.dtype) -> Tensor:
    """``-log n_c(i)`` for every (anchor, contrast entry) pair ``(M, K)``: the class-averaging weights of [3].

    ``n_c(i)`` counts the contrast entries of entry ``k``'s class, less one when it is the anchor's own class (the
    anchor itself is not in its denominator). Classes are ids in ``[0, n_classes)``.
    """
    counts = torch.bincount(contrast_class).to(dtype)  # entries per class, views (and queue) included
    per_entry = counts[contrast_class][None, :] - (anchor_class[:, None] == contrast_class[None, :]).to(dtype)
    return -per_entry.clamp(min=1).log()


def dense_per_anchor(
    anchors: Tensor,
    contrast: Tensor,
    self_index: Tensor,
    weight: Tensor,
    num_anchor_views: int,
    num_views: int,
    offset: int,
    inv_temperature: float,
    summation: str,
    denominator: str,
    positives_cap: int | None,
    queue_weight: Tensor | None = None,
    contrast_class: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Every variant with explicit masks; returns the per-anchor losses ``(M,)`` and their validity ``(M,)``.

    Args:
        anchors: ``(M, D)`` view-major (``view * batch + sample``); ``contrast``: ``(K, D)``, the global batch
            view-major, then any queue entries.
        self_index: ``(M,)`` column of each anchor in ``contrast``.
        weight: Sample-level positive weights ``(B, B_global)`` in [0, 1], the compute dtype; 0 is a negative.
        num_anchor_views: Views per sample that are anchors (``V`` or 1); ``num_views``: ``V``.
        offset: Index of this rank's first sample in the global batch.
        queue_weight: ``(B, Q)`` weights of the queue entries, which follow the batch in ``contrast``.
        contrast_class: ``(K,)`` class ids in ``[0, n)``, needed by ``denominator="class_mean"`` only.
    """
    batch = weight.shape[0]
    same = weight > 0
    if positives_cap is not None:
        diagonal = torch.zeros_like(same)
        diagonal[torch.arange(batch), offset + torch.arange(batch, device=same.device)] = True
        others = same & ~diagonal
        keep = others & (others.long().cumsum(dim=1) <= positives_cap // num_views)  # first ones by position
        weight = torch.where(keep | (same & diagonal), weight, torch.zeros_like(weight))
    pos_weight = weight.repeat(num_anchor_views, num_views)  # (M, V * B_global)
    negatives = ~same.repeat(num_anchor_views, num_views)  # capped-out positives are neither
    if queue_weight is not None:
        pos_weight = torch.cat([pos_weight, queue_weight.repeat(num_anchor_views, 1)], dim=1)  # (M, K)
        negatives = torch.cat([negatives, queue_weight.repeat(num_anchor_views, 1) == 0], dim=1)
    rows = torch.arange(anchors.shape[0], device=anchors.device)
    pos_weight[rows, self_index] = 0.0
    negatives[rows, self_index] = False
    positives = pos_weight > 0

    logits = (anchors * inv_temperature) @ contrast.T  # (M, K)
    sum_weight = pos_weight.sum(dim=1)
    lse_neg = masked_logsumexp(logits, negatives)
    valid = sum_weight > 0
    if denominator == "all":
        log_den = masked_logsumexp(logits, positives | negatives)[:, None]
    elif denominator == "class_mean":
        assert contrast_class is not None
        log_w = class_mean_log_weights(contrast_class[self_index], contrast_class, logits.dtype)
        log_den = masked_logsumexp(logits + log_w, positives | negatives)[:, None]
    elif denominator == "one_positive":
        log_den = torch.logaddexp(logits, lse_neg[:, None])
    else:  # only_negatives
        log_den = lse_neg[:, None]
        valid = valid & negatives.any(dim=1)
    log_prob = logits - log_den  # (M, K), meaningful on positives only
    if summation == "out":
        weighted = torch.where(positives, pos_weight * log_prob, torch.zeros_like(log_prob))
        per_anchor = -weighted.sum(1) / torch.where(valid, sum_weight, torch.ones_like(sum_weight))
    else:
        log_weight = torch.where(positives, pos_weight, torch.ones_like(pos_weight)).log()
        log_sum_weight = torch.where(valid, sum_weight, torch.ones_like(sum_weight)).log()
        per_anchor = -(masked_logsumexp(log_prob + log_weight, positives) - log_sum_weight)
    per_anchor = torch.where(valid, per_anchor, torch.zeros_like(per_anchor))
    return per_anchor, valid
