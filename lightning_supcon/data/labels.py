"""Labels: the data set that carries them with its samples, class names, label -> class index, a stratified split.

Every data set a :class:`~lightning_supcon.data.base.MultiViewDataModule` trains on is a :class:`LabelledDataset`:
its ``labels`` are aligned with its samples (``labels[i]`` is the label of ``data[i]``) and are read without loading
an image, so a label fraction, the unknown-label option and the class-balanced sampler read the labels of the very
samples they pick. A subset or a relabelling is a new :class:`LabelledDataset`, never a guess.

A source gives raw labels, either class names (strings: the class folders' names, a list's label column) or class
indices (ints: a list whose labels are all integers, a table's integer or ``ClassLabel`` column). The classes are
those of the training split: the sorted names, or ``0 .. max`` for indices (ImageFolder's convention for names,
torchvision's ``ImageFolder.find_classes``). Validation and test labels are indexed against them, and a label that
is not a training class is an error naming it and where it was found.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import Dataset

RawLabel = int | str
_INTEGER = re.compile(r"[+-]?\d+")


class Indexable(Protocol):
    """Images by index: a list, an array, a tensor of images, or any object with ``__getitem__`` and ``__len__``."""

    def __getitem__(self, index: int) -> Any: ...

    def __len__(self) -> int: ...


class Selection:
    """``items`` at ``indices``: a view, so no image is copied or loaded."""

    def __init__(self, items: Indexable, indices: np.ndarray) -> None:
        self.items, self.indices = items, indices

    def __getitem__(self, index: int) -> Any:
        return self.items[int(self.indices[index])]

    def __len__(self) -> int:
        return len(self.indices)


class LabelledDataset(Dataset):
    """``(load(images[i]), labels[i])`` samples whose labels are carried with them, aligned.

    Args:
        images: The raw images by index (file paths, PIL images, uint8 ``(C, H, W)`` tensors, ...).
        labels: One label per image: class indices ``(N,)`` (-1: unknown class) or multi-hot rows ``(N, L)``.
        load: What turns a raw image into the sample's image (a decoder); ``None``: the image as it is.

    Raises:
        ValueError: If ``labels`` and ``images`` differ in length.

    Example:
        >>> data = LabelledDataset(["a", "b", "c"], [2, 0, 2])
        >>> data[1], data.labels.tolist()
        (('b', 0), [2, 0, 2])
        >>> part = data.subset([2, 0])
        >>> [part[i] for i in range(len(part))], part.labels.tolist()
        ([('c', 2), ('a', 2)], [2, 2])
    """

    def __init__(self, images: Indexable, labels: Any, load: Callable[[Any], Any] | None = None) -> None:
        labels = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels, dtype=np.int64)
        if len(labels) != len(images):
            raise ValueError(f"Expected one label per image, but got {len(labels)} labels for {len(images)} images.")
        self.images = images
        self.labels = labels
        self.load = load

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image = self.images[index]
        label = self.labels[index]
        return (image if self.load is None else self.load(image)), (int(label) if label.ndim == 0 else label)

    def subset(self, indices: Sequence[int] | np.ndarray) -> LabelledDataset:
        """The samples at ``indices``, in that order, with their own labels."""
        picked = np.asarray(indices, dtype=np.int64)
        return LabelledDataset(Selection(self.images, picked), self.labels[picked], self.load)

    def relabel(self, labels: Any) -> LabelledDataset:
        """The same samples with other labels (``(N,)``, aligned), e.g. some set to -1 (unknown)."""
        return LabelledDataset(self.images, labels, self.load)


def parse_labels(cells: Sequence[str]) -> list[int] | list[str]:
    """Text cells as labels: ints when every cell is an integer, else the names as written (stripped).

    Example:
        >>> parse_labels(["3", " 1", "0"]), parse_labels(["cat", "7"])
        ([3, 1, 0], ['cat', '7'])
    """
    stripped = [cell.strip() for cell in cells]
    if stripped and all(_INTEGER.fullmatch(cell) for cell in stripped):
        return [int(cell) for cell in stripped]
    return stripped


def class_names(labels: Sequence[RawLabel]) -> list[str]:
    """The classes of training labels: the sorted distinct names, or ``"0" .. "max"`` for class indices.

    Raises:
        ValueError: For no labels, a negative class index, or names mixed with indices.

    Example:
        >>> class_names(["dog", "cat", "dog"]), class_names([2, 0, 2])
        (['cat', 'dog'], ['0', '1', '2'])
    """
    if not labels:
        raise ValueError("Expected at least one training label, but got none.")
    indices = [label for label in labels if isinstance(label, int)]
    names = [label for label in labels if isinstance(label, str)]
    if len(indices) == len(labels):
        if min(indices) < 0:
            raise ValueError(f"Expected class indices >= 0, but got {min(indices)}.")
        return [str(i) for i in range(max(indices) + 1)]
    if len(names) == len(labels):
        return sorted(set(names))
    kinds = sorted({type(label).__name__ for label in labels})
    raise ValueError(f"Expected labels that are all class names or all class indices, but got {kinds}.")


def encode_labels(labels: Sequence[RawLabel], classes: Sequence[str], where: str) -> list[int]:
    """Class indices of ``labels``: a name's position in ``classes``, or an index checked against their number.

    Args:
        labels: Raw labels, names or indices.
        classes: The training classes.
        where: The source, for the error message (a file or folder, a split).

    Raises:
        ValueError: For a label that is not one of ``classes``.

    Example:
        >>> encode_labels(["dog", "cat"], ["cat", "dog"], "val.csv"), encode_labels([1, 0], ["a", "b"], "val")
        ([1, 0], [1, 0])
        >>> encode_labels(["fox"], ["cat", "dog"], "val.csv")
        Traceback (most recent call last):
        ...
        ValueError: Label 'fox' in val.csv is not a class of the training set (2 classes: 'cat' ... 'dog').
    """
    index = {name: i for i, name in enumerate(classes)}
    out: list[int] = []
    for label in labels:
        i = (label if 0 <= label < len(classes) else None) if isinstance(label, int) else index.get(label)
        if i is None:
            span = f"{classes[0]!r} ... {classes[-1]!r}" if classes else "none"
            raise ValueError(
                f"Label {label!r} in {where} is not a class of the training set ({len(classes)} classes: {span})."
            )
        out.append(i)
    return out


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded, class-stratified ``(train, val)`` index lists: scikit-learn's ``train_test_split`` with
    ``stratify``, the split :class:`~lightning_supcon.data.digits.DigitsDataModule` makes (the same indices for the
    same labels and seed).

    Raises:
        ValueError: For ``fraction`` outside ``(0, 1)``, or a class too small to be split (scikit-learn's reason).

    Example:
        >>> train, val = stratified_split([0, 0, 0, 0, 1, 1, 1, 1], 0.5, seed=0)
        >>> sorted(train + val), sorted(i < 4 for i in val)
        ([0, 1, 2, 3, 4, 5, 6, 7], [False, False, True, True])
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"Expected argument `val_fraction` to be in (0, 1), but got {fraction}.")
    targets = np.asarray(labels)
    try:
        train, val = train_test_split(np.arange(len(targets)), test_size=fraction, stratify=targets, random_state=seed)
    except ValueError as error:
        raise ValueError(
            f"Cannot hold out a stratified validation set of `val_fraction` {fraction} from {len(targets)} training "
            f"samples ({error}): give a validation split or change `val_fraction`."
        ) from None
    return [int(i) for i in train], [int(i) for i in val]
