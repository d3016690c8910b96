"""The inputs of the SupCon loss: their checks, and the view-major layout of anchors and contrast entries.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_supcon.losses.positives import UNKNOWN, check_mask_weights, check_multihot


def check_inputs(
    features: Tensor,
    labels: Tensor | None,
    mask: Tensor | None,
    positives_cap: int | None,
    queue: Tensor | None,
    queue_labels: Tensor | None,
) -> None:
    """Raise ``ValueError`` for inputs of the wrong shape or type, or options that do not go together."""
    if features.dim() < 3:
        raise ValueError(
            f"Expected `features` of shape (batch, views, ...) with at least 3 dims, but got {tuple(features.shape)}."
        )
    if labels is not None and mask is not None:
        raise ValueError("Give `labels` or `mask`, not both.")
    batch, num_views = features.shape[:2]
    if positives_cap is not None and positives_cap % num_views != 0:
        raise ValueError(
            f"Expected `positives_cap` to be a multiple of the number of views ({num_views}), but got {positives_cap}."
        )
    if queue is not None:
        if mask is not None or positives_cap is not None:
            raise ValueError(
                "A `queue` works with `labels` or without supervision, not with `mask` or `positives_cap`."
            )
        if (labels is None) != (queue_labels is None):
            raise ValueError("Give `queue_labels` exactly when `labels` are given (the queue's classes).")
        if labels is not None and labels.dim() == 2:
            raise ValueError("A `queue` works with class labels (batch,), not with multi-hot labels.")
        if queue_labels is not None and queue_labels.shape != (queue.shape[0],):
            raise ValueError(
                f"Expected `queue_labels` of shape ({queue.shape[0]},), but got {tuple(queue_labels.shape)}."
            )
        if queue[0].numel() != features[0, 0].numel():
            raise ValueError(
                f"Expected `queue` entries of {features[0, 0].numel()} features, but got {queue[0].numel()}."
            )
    if mask is not None:
        check_mask_weights(mask)
    if labels is not None and labels.dim() == 2:
        check_multihot(labels, batch)
    elif labels is not None:
        _check_class_labels(labels, batch, "labels")
    if queue_labels is not None:
        _check_class_labels(queue_labels, queue_labels.shape[0], "queue_labels")


def _check_class_labels(labels: Tensor, batch: int, name: str) -> None:
    if labels.dim() != 1 or labels.shape[0] != batch:
        raise ValueError(
            f"Expected `{name}` of shape ({batch},), or multi-hot ({batch}, num_classes), "
            f"but got {tuple(labels.shape)}."
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"Expected integer `{name}`, but got dtype {labels.dtype}.")
    if labels.numel() and labels.min() < UNKNOWN:
        raise ValueError(f"Expected `{name}` >= {UNKNOWN} ({UNKNOWN}: unknown class), but got {int(labels.min())}.")


def view_major(z: Tensor, global_z: Tensor, offset: int, contrast_mode: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Anchors and contrast entries in view-major layout (row ``v * batch + b`` is view ``v`` of sample ``b``).

    Args:
        z: Local features ``(B, V, D)``.
        global_z: Features of all ranks ``(B_global, V, D)`` (``z`` itself without gathering).
        offset: Index of this rank's first sample in the global batch.
        contrast_mode: ``"all"``: every view is an anchor; ``"one"``: view 0 only.

    Returns:
        ``anchors`` ``(V * B, D)`` or ``(B, D)``, ``contrast`` ``(V * B_global, D)``, each anchor's own row in
        ``contrast`` ``(V * B,)`` or ``(B,)``, and the local samples' global indices ``(B,)``.
    """
    batch, num_views = z.shape[:2]
    global_batch = global_z.shape[0]
    contrast = global_z.transpose(0, 1).reshape(num_views * global_batch, -1)  # (V * B_global, D)
    local_index = offset + torch.arange(batch, device=z.device)
    if contrast_mode == "all":
        anchors = z.transpose(0, 1).reshape(num_views * batch, -1)  # (V * B, D)
        self_index = (torch.arange(num_views, device=z.device)[:, None] * global_batch + local_index).reshape(-1)
        return anchors, contrast, self_index, local_index
    return z[:, 0], contrast, local_index, local_index  # anchors (B, D)
