"""Labels shared by the LightningModules: their checks and the classifier loss for each kind of label.

A neutral home, so no module imports another module's helpers. Two kinds of labels:

- single-label: integer class labels ``(batch,)`` in ``[0, num_classes)``, scored with cross-entropy;
- multi-label (``multilabel=True``): multi-hot labels ``(batch, num_labels)`` of 0s and 1s (a sample may have none,
  one or several labels), scored with one binary cross-entropy per label on the logits (``BCEWithLogits``).

In a partially labelled batch a class label ``-1`` means "unknown" (``allow_unknown``; the SupCon loss treats such
a sample as its own class, issue 17 item 3), and :func:`known` selects the labelled rows for a classifier.

The kind is declared by the DataModule (``multilabel = True``, linked into the model by the CLI like
``num_classes``), never guessed from the tensors: a batch of the other kind is an error that names the fix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_supcon.losses.positives import UNKNOWN


def check_labels(
    labels: Tensor, batch_size: int, num_classes: int, multilabel: bool = False, allow_unknown: bool = False
) -> None:
    """Raise ``ValueError`` unless ``labels`` are class labels ``(batch_size,)`` in ``[0, num_classes)`` or, with
    ``multilabel``, multi-hot labels ``(batch_size, num_classes)`` of 0s and 1s.

    Args:
        labels: Integer class labels ``(batch_size,)``, or multi-hot labels ``(batch_size, num_classes)``.
        batch_size: The expected number of samples.
        num_classes: Classes (single-label: labels must be below this), or labels per sample (multi-label).
        multilabel: Expect multi-hot labels.
        allow_unknown: Accept the class label ``-1`` (unknown) too.

    Raises:
        ValueError: For another shape (naming the ``multilabel`` setting when the other kind was given), or
            values outside ``[0, num_classes)`` (``[-1, num_classes)`` with ``allow_unknown``) or ``{0, 1}``
            (multi-label).

    Example:
        >>> import torch
        >>> check_labels(torch.tensor([0, 2]), batch_size=2, num_classes=3)
        >>> check_labels(torch.tensor([[0, 1, 1], [0, 0, 0]]), batch_size=2, num_classes=3, multilabel=True)
        >>> check_labels(torch.tensor([0, 3]), batch_size=2, num_classes=3)
        Traceback (most recent call last):
        ...
        ValueError: Labels must lie in [0, num_classes=3), but got values in [0, 3].
    """
    expected = (batch_size, num_classes) if multilabel else (batch_size,)
    if labels.shape != expected:
        hint = ""
        if labels.dim() == 2 and not multilabel:
            hint = " Multi-hot labels need `multilabel=True` (a multi-label DataModule sets it through the CLI)."
        elif labels.dim() == 1 and multilabel:
            hint = " Class labels need `multilabel=False`: this model expects multi-hot labels (batch, num_labels)."
        raise ValueError(f"Expected labels of shape {expected}, but got {tuple(labels.shape)}.{hint}")
    if multilabel:
        if labels.numel() and not ((labels == 0) | (labels == 1)).all():
            raise ValueError(f"Multi-hot labels must be 0 or 1, but got values in {sorted(labels.unique().tolist())}.")
        return
    low = UNKNOWN if allow_unknown else 0
    if labels.numel() and (labels.min() < low or labels.max() >= num_classes):
        hint = ""
        if not allow_unknown and int(labels.min()) == UNKNOWN:
            hint = " (-1 is an unknown label, as `unlabelled: unknown` gives: only SupConModule trains on those)"
        raise ValueError(
            f"Labels must lie in [{low}, num_classes={num_classes}), but got values in "
            f"[{int(labels.min())}, {int(labels.max())}].{hint}"
        )


def known(labels: Tensor) -> Tensor:
    """The rows whose label is known: ``(N,)`` bool, ``False`` where a class label is ``-1`` (multi-hot rows are
    always known).

    Example:
        >>> import torch
        >>> known(torch.tensor([2, -1, 0])).tolist()
        [True, False, True]
    """
    if labels.dim() != 1:
        return torch.ones(labels.shape[0], dtype=torch.bool, device=labels.device)
    return labels != UNKNOWN


def classifier_loss(logits: Tensor, labels: Tensor, multilabel: bool = False, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of class ``logits`` ``(N, C)``, or with ``multilabel`` the mean binary cross-entropy of
    every (sample, label) pair.

    With ``multilabel``, label smoothing moves each 0/1 target towards 1/2: ``y (1 - s) + s / 2`` (the binary form
    of ``torch.nn.functional.cross_entropy``'s ``y (1 - s) + s / C``).

    Args:
        logits: ``(N, C)`` scores before softmax / sigmoid.
        labels: ``(N,)`` class indices, or ``(N, C)`` multi-hot 0/1 (any dtype) with ``multilabel``.
        multilabel: Use ``binary_cross_entropy_with_logits``.
        label_smoothing: ``s`` in ``[0, 1)``.

    Returns:
        The scalar loss.

    Example:
        >>> import torch
        >>> logits = torch.zeros(2, 3)
        >>> round(classifier_loss(logits, torch.tensor([[1, 0, 1], [0, 0, 0]]), multilabel=True).item(), 4)
        0.6931
    """
    if not multilabel:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    targets = labels.to(logits.dtype)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / 2.0
    return F.binary_cross_entropy_with_logits(logits, targets)
