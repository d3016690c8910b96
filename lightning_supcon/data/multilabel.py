"""``MultilabelDigitsDataModule``: scikit-learn's digits relabelled with attributes, a multi-label data set that needs
no download.

Each image gets a multi-hot label ``(num_labels,)`` of 0s and 1s: the attributes (:data:`DIGIT_ATTRIBUTES`) of its
digit. Several digits share a label set (1 and 3 are both only "odd"), a digit may have several labels (9 is odd,
greater than 4 and has a loop) and two have none (2 and 4): the three cases the multi-label form of SupCon must
handle (the Jaccard overlap of label sets weighs a pair; a sample with no label has only its own views as
positives). Images, split and augmentation are those of :class:`~lightning_supcon.data.digits.DigitsDataModule`.

============  ==========================  ==================================================================
attribute     digits                      meaning
============  ==========================  ==================================================================
odd           1, 3, 5, 7, 9               parity
greater_4     5, 6, 7, 8, 9               the value is above 4
has_loop      0, 6, 8, 9                  the usual handwritten shape has a closed loop (4 is drawn open here)
============  ==========================  ==================================================================
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import Tensor

from lightning_supcon.data.base import Split
from lightning_supcon.data.digits import DigitsDataModule
from lightning_supcon.data.labels import LabelledDataset

DigitAttribute = Literal["odd", "greater_4", "has_loop"]
DIGIT_ATTRIBUTES: dict[str, tuple[int, ...]] = {
    "odd": (1, 3, 5, 7, 9),
    "greater_4": (5, 6, 7, 8, 9),
    "has_loop": (0, 6, 8, 9),
}
"""The digits that have each attribute."""


def attribute_labels(digits: Tensor, attributes: tuple[str, ...]) -> Tensor:
    """Multi-hot labels ``(N, len(attributes))`` int64 of digit classes ``(N,)``, one column per attribute.

    Raises:
        ValueError: For an empty, repeated or unknown attribute.

    Example:
        >>> attribute_labels(torch.tensor([0, 2, 9]), ("odd", "greater_4", "has_loop")).tolist()
        [[0, 0, 1], [0, 0, 0], [1, 1, 1]]
    """
    known = get_args(DigitAttribute)
    if not attributes or len(set(attributes)) != len(attributes) or not set(attributes) <= set(known):
        raise ValueError(
            f"Expected argument `attributes` to be distinct names among {known}, but got {list(attributes)}."
        )
    table = torch.tensor([[int(d in DIGIT_ATTRIBUTES[name]) for name in attributes] for d in range(10)])  # (10, L)
    return table[digits]


class MultilabelDigitsDataModule(DigitsDataModule):
    """The digits with multi-hot attribute labels: ``num_classes`` is the number of labels, ``multilabel = True``.

    Batches are those of :class:`~lightning_supcon.data.digits.DigitsDataModule` with labels ``(B, num_labels)``
    int64 instead of ``(B,)``. The CLI links ``num_classes`` and ``multilabel`` into the model (its multi-label
    probe, kNN and loss).

    Args:
        attributes: Which attributes, in label order (see the module doc).
        **kwargs: The arguments of :class:`~lightning_supcon.data.digits.DigitsDataModule`.

    Raises:
        ValueError: For an empty, repeated or unknown attribute, and as ``DigitsDataModule``.

    Example:
        >>> dm = MultilabelDigitsDataModule(batch_size=32, n_views=2)
        >>> views, labels = next(iter(dm.train_dataloader()))
        >>> views.shape, labels.shape, dm.num_classes, dm.multilabel
        (torch.Size([32, 2, 1, 16, 16]), torch.Size([32, 3]), 3, True)
    """

    multilabel = True

    def __init__(
        self, attributes: tuple[DigitAttribute, ...] = ("odd", "greater_4", "has_loop"), **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.attributes = tuple(attributes)
        self.num_classes = len(self.attributes)  # labels per sample

    def dataset(self, split: Split) -> LabelledDataset | None:
        """The digits' split with each digit's attribute labels, multi-hot ``(N, len(attributes))``."""
        data = super().dataset(split)
        return None if data is None else data.relabel(attribute_labels(torch.as_tensor(data.labels), self.attributes))
