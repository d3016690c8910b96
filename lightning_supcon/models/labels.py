"""Label checks shared by the LightningModules (a neutral home, so no module imports another module's helpers)."""

from __future__ import annotations

from torch import Tensor


def check_labels(labels: Tensor, batch_size: int, num_classes: int) -> None:
    """Raise ``ValueError`` unless ``labels`` has shape ``(batch_size,)`` and values in ``[0, num_classes)``.

    Args:
        labels: Integer class labels ``(batch_size,)``.
        batch_size: The expected number of labels.
        num_classes: Labels must be below this.

    Raises:
        ValueError: For another shape, or values outside ``[0, num_classes)``.

    Example:
        >>> import torch
        >>> check_labels(torch.tensor([0, 2]), batch_size=2, num_classes=3)
        >>> check_labels(torch.tensor([0, 3]), batch_size=2, num_classes=3)
        Traceback (most recent call last):
        ...
        ValueError: Labels must lie in [0, num_classes=3), but got values in [0, 3].
    """
    if labels.shape != (batch_size,):
        raise ValueError(f"Expected labels of shape ({batch_size},), but got {tuple(labels.shape)}.")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"Labels must lie in [0, num_classes={num_classes}), but got values in "
            f"[{int(labels.min())}, {int(labels.max())}]."
        )
