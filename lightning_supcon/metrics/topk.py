"""Top-k accuracy with a deterministic order of tied scores: the lower class index ranks first, as ``argmax`` does.

``torchmetrics``' ``MulticlassAccuracy(top_k=k)`` picks the top ``k`` with ``torch.topk``, whose order among equal
scores is unspecified (on the CPU it prefers the *higher* indices): with all scores equal, top-1 (``argmax``)
credits class 0 while top-5 credits classes 5-9 and not class 0, so a sample can be top-1 correct and top-5 wrong.
Here the rank of the true class is counted directly:

    rank = #{c : s_c > s_y} + #{c < y : s_c = s_y},      correct at k  <=>  rank < k,

so top-1 agrees with ``argmax`` and top-k contains top-(k-1). A class can also be excluded from being a
prediction at all (``allowed``): a kNN class that got no vote is never a correct prediction, whatever ``k``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_supcon.utils.checks import check_positive_integers


def true_class_rank(scores: Tensor, target: Tensor) -> Tensor:
    """Rank of the true class among all classes, 0 for the best, ties broken by the lower class index.

    Args:
        scores: ``(N, C)`` class scores (logits, probabilities or kNN votes).
        target: ``(N,)`` integer classes in ``[0, C)``.

    Returns:
        ``(N,)`` int64 ranks in ``[0, C)``.

    Example:
        >>> true_class_rank(torch.tensor([[0.0, 0.0, 0.0], [1.0, 3.0, 3.0]]), torch.tensor([2, 2]))
        tensor([2, 1])
    """
    true_score = scores.gather(1, target[:, None])  # (N, 1)
    lower_index = torch.arange(scores.shape[1], device=scores.device) < target[:, None]  # (N, C)
    return (scores > true_score).sum(dim=1) + ((scores == true_score) & lower_index).sum(dim=1)


def topk_correct(scores: Tensor, target: Tensor, k: int, allowed: Tensor | None = None) -> Tensor:
    """Whether the true class is among the ``k`` best (ties by lower class index) and may be predicted at all.

    Args:
        scores: ``(N, C)`` class scores.
        target: ``(N,)`` integer classes in ``[0, C)``.
        k: How many of the best classes count, >= 1.
        allowed: ``(N, C)`` boolean, the classes that can be predicted for each sample (e.g. those that got a kNN
            vote); ``None`` allows every class.

    Returns:
        ``(N,)`` boolean.

    Raises:
        ValueError: For ``k < 1`` or shapes that do not match.

    Example:
        >>> scores = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
        >>> topk_correct(scores, torch.tensor([3]), k=4), topk_correct(scores, torch.tensor([3]), k=3)
        (tensor([True]), tensor([False]))
        >>> topk_correct(scores, torch.tensor([3]), k=4, allowed=scores > 0)  # class 3 got no vote
        tensor([False])
    """
    check_positive_integers(k=k)
    if scores.ndim != 2 or target.shape != (scores.shape[0],):
        raise ValueError(
            f"Expected `scores` (N, C) and `target` (N,), but got {tuple(scores.shape)} and {tuple(target.shape)}"
        )
    target = target.long()
    correct = true_class_rank(scores, target) < k
    if allowed is not None:
        if allowed.shape != scores.shape:
            raise ValueError(f"Expected `allowed` of shape {tuple(scores.shape)}, but got {tuple(allowed.shape)}")
        correct = correct & allowed.gather(1, target[:, None]).squeeze(1)
    return correct


class TopKAccuracy(Metric):
    """Fraction of samples whose true class is among the ``top_k`` highest scores, ties by lower class index.

    A drop-in for ``torchmetrics.classification.MulticlassAccuracy(num_classes, top_k=top_k, average="micro")``
    with a deterministic tie order (see the module docstring). States are sums, reduced across processes.

    Args:
        num_classes: Number of classes ``C``.
        top_k: How many of the best classes count, in ``[1, num_classes]``.
        **kwargs: Passed to ``torchmetrics.Metric``.

    Raises:
        ValueError: For bad arguments; in ``update``, for shapes or targets that do not match ``num_classes``.

    Example:
        >>> metric = TopKAccuracy(num_classes=10, top_k=5)
        >>> metric.update(torch.zeros(2, 10), torch.tensor([0, 9]))  # all tied: classes 0-4 are the top 5
        >>> metric.compute()
        tensor(0.5000)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: Tensor
    total: Tensor

    def __init__(self, num_classes: int, top_k: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_positive_integers(num_classes=num_classes)
        if not 1 <= top_k <= num_classes:
            raise ValueError(f"Expected argument `top_k` in [1, {num_classes}], but got {top_k}")
        self.num_classes = num_classes
        self.top_k = top_k
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Count ``preds`` ``(N, num_classes)`` scores against integer ``target`` ``(N,)``."""
        if preds.ndim != 2 or preds.shape[1] != self.num_classes or target.shape != (preds.shape[0],):
            raise ValueError(
                f"Expected `preds` (N, {self.num_classes}) and `target` (N,), but got {tuple(preds.shape)} and "
                f"{tuple(target.shape)}"
            )
        target = target.long()
        if target.numel() and (target.min() < 0 or target.max() >= self.num_classes):
            raise ValueError(
                f"Expected `target` in [0, {self.num_classes}), but got values in "
                f"[{int(target.min())}, {int(target.max())}]"
            )
        self.correct += topk_correct(preds.detach(), target, self.top_k).sum()
        self.total += target.numel()

    def compute(self) -> Tensor:
        """The fraction of correct samples, a float32 scalar (NaN before any sample)."""
        return self.correct.float() / self.total.float()
