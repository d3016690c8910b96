"""Who is whose positive: class groups with unknown labels, weighted masks, and multi-label pair weights.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [1] HobbitLong/SupContrast, ``losses.py``: a float ``mask`` weights each positive pair
  (``(mask * log_prob).sum(1) / mask.sum(1)``), the form the widely used PyTorch reference code computes.
- [2] Multi-label pairs: the Jaccard index of the two label sets ``|a & b| / |a | b|`` (Jaccard, 1901) as the
  pair's weight, or ``"any"``: a shared label makes a positive (weight 1). This project's definition (issue 17),
  built on the weighted positives of [1].
"""

from __future__ import annotations

import torch
from torch import Tensor

UNKNOWN = -1
"""The label of a sample whose class is not known (partially labelled batches)."""


def class_groups(labels: Tensor, first: int = 0) -> Tensor:
    """Class ids where each unknown label (``-1``) becomes a group of its own: ``-1 - (first + index)``.

    A sample in its own group has only its own other views as positives (SimCLR for it) and is a negative for
    every other sample. Pass the global labels (all ranks, in rank order) so that the groups are unique in the
    global batch; ``first`` shifts them past the groups of earlier entries (the batch, before a queue).

    Args:
        labels: Integer labels ``(n,)``, ``>= -1``.
        first: Index of ``labels[0]`` among all entries given unique groups.

    Returns:
        ``(n,)`` int64: known labels unchanged, each unknown one a distinct negative id below ``-first``.

    Example:
        >>> class_groups(torch.tensor([3, -1, 3, -1]))
        tensor([ 3, -2,  3, -4])
    """
    labels = labels.long()
    own = -1 - (first + torch.arange(labels.shape[0], device=labels.device))
    return torch.where(labels == UNKNOWN, own, labels)


def check_mask_weights(mask: Tensor) -> None:
    """Raise ``ValueError`` unless every entry of ``mask`` is a weight in ``[0, 1]`` (no NaN).

    Example:
        >>> check_mask_weights(torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
        >>> check_mask_weights(torch.tensor([[1.0, -0.5], [0.0, 1.0]]))
        Traceback (most recent call last):
        ...
        ValueError: Expected `mask` weights in [0, 1], but got 1 entries outside (e.g. -0.5); ...
    """
    if mask.dtype == torch.bool or mask.numel() == 0:
        return
    values = mask.double() if mask.is_floating_point() else mask.long()
    bad = values.isnan() | (values < 0) | (values > 1)
    if bad.any():
        example = values[bad][0].item()
        raise ValueError(
            f"Expected `mask` weights in [0, 1], but got {int(bad.sum())} entries outside (e.g. {example}); "
            "each anchor's weights are divided by their sum, so dividing a row by its maximum changes nothing."
        )


def multilabel_weights(local: Tensor, contrast: Tensor, mode: str, dtype: torch.dtype) -> Tensor:
    """Pair weights of multi-hot label sets: Jaccard overlap (``"jaccard"``) or any shared label (``"any"``).

    Computed with one matmul: ``|a & b| = a . b`` and ``|a | b| = |a| + |b| - |a & b|``. Two empty label sets have
    weight 0 (a sample with no label is only its own views' positive; the caller sets those).

    Args:
        local: Multi-hot anchors' labels ``(B, C)``, 0/1.
        contrast: Multi-hot labels of the contrast samples ``(B_global, C)``.
        mode: ``"jaccard"`` or ``"any"``.
        dtype: Floating dtype of the result.

    Returns:
        ``(B, B_global)`` weights in ``[0, 1]``.

    Example:
        >>> a = torch.tensor([[1, 1, 0], [0, 0, 0]])
        >>> multilabel_weights(a, torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 0]]), "jaccard", torch.float64)
        tensor([[0.5000, 0.3333, 0.0000],
                [0.0000, 0.0000, 0.0000]], dtype=torch.float64)
        >>> multilabel_weights(a, torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 0]]), "any", torch.float64)
        tensor([[1., 1., 0.],
                [0., 0., 0.]], dtype=torch.float64)
    """
    a, b = local.to(dtype), contrast.to(dtype)
    shared = a @ b.T  # (B, B_global): |a & b|, exact integers
    if mode == "any":
        return (shared > 0).to(dtype)
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - shared
    return shared / union.clamp(min=1)


def check_multihot(labels: Tensor, batch: int) -> None:
    """Raise ``ValueError`` unless ``labels`` is a multi-hot ``(batch, num_classes)`` tensor of 0/1 values."""
    if labels.shape[0] != batch:
        raise ValueError(f"Expected multi-hot `labels` of shape ({batch}, num_classes), but got {tuple(labels.shape)}.")
    if labels.is_complex() or ((labels != 0) & (labels != 1)).any():
        raise ValueError("Expected multi-hot `labels` of 0/1 values (a sample may have none, several or all).")
