"""How many anchors of a batch have a positive from another sample of their class (not only their own views).

SupCon [0] learns from labels only through such positives: an anchor whose class has no other sample in the
(global) batch has its own views as its only positives, as in SimCLR. With many classes and a small batch that is
most anchors; :class:`~lightning_supcon.data.sampler.ClassBalancedSampler` makes it none. SupConModule logs the
fraction as ``train/anchors_with_class_positives``.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
"""

from __future__ import annotations

import torch
from torch import Tensor


def anchors_with_class_positives(labels: Tensor) -> Tensor:
    """The fraction of samples that share a label with at least one other sample of the batch.

    Args:
        labels: Class labels ``(B,)`` (``-1``: unknown, which has no class positive), or multi-hot labels ``(B, C)``
            (0/1; two samples are positives when they share any label, a sample with none has no class positive).

    Returns:
        A float scalar in ``[0, 1]`` (0 for an empty batch).

    Raises:
        ValueError: For labels of another number of dimensions.

    Example:
        >>> anchors_with_class_positives(torch.tensor([0, 0, 1, 2]))
        tensor(0.5000)
        >>> anchors_with_class_positives(torch.tensor([-1, -1, 3, 3]))
        tensor(0.5000)
        >>> anchors_with_class_positives(torch.tensor([[1, 0], [1, 1], [0, 0]]))
        tensor(0.6667)
    """
    if labels.dim() == 1:
        known = labels >= 0
        same = (labels[:, None] == labels[None, :]) & known[:, None]  # (B, B)
    elif labels.dim() == 2:
        multi_hot = (labels > 0).float()
        same = (multi_hot @ multi_hot.T) > 0  # (B, B): any label shared
    else:
        raise ValueError(f"Expected labels of shape (B,) or (B, C), but got {tuple(labels.shape)}.")
    if labels.shape[0] == 0:
        return torch.zeros((), device=labels.device)
    same.fill_diagonal_(False)  # the sample itself (its own views) does not count
    return same.any(dim=1).float().mean()
