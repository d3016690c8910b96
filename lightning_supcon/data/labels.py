"""Labels: the data set that carries them with its samples, class names, label -> class index, a stratified split.

Every data set a :class:`~lightning_supcon.data.base.MultiViewDataModule` trains on is a :class:`LabelledDataset`:
its ``labels`` are aligned with its samples (``labels[i]`` is the label of ``data[i]``) and are read without loading
an image, so a label fraction, the unknown-label option and the class-balanced sampler read the labels of the very
samples they pick. A subset or a relabelling is a new :class:`LabelledDataset`, never a guess.

A source gives raw labels, either class names (strings: the class folders' names, a list's label column) or class
indices (ints: a table's integer or ``ClassLabel`` column; texts that are all integers: a list's). The classes, and
so the labels' type, are decided once, from the training split: the sorted names, or ``0 .. max`` for indices
(ImageFolder's convention for names, torchvision's ``ImageFolder.find_classes``). Validation and test labels are
read the same way and indexed against them; a label that is not a training class is an error naming it and where it
was found. ``-1`` is the unknown class everywhere (semi-supervised SupCon): no class, kept as -1.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, get_args

import numpy as np
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import Dataset

from lightning_supcon.losses.positives import UNKNOWN

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
        ValueError: If ``labels`` and ``images`` differ in length, or are not integers (:func:`as_indices`).

    Example:
        >>> data = LabelledDataset(["a", "b", "c"], [2, 0, 2])
        >>> data[1], data.labels.tolist()
        (('b', 0), [2, 0, 2])
        >>> part = data.subset([2, 0])
        >>> [part[i] for i in range(len(part))], part.labels.tolist()
        ([('c', 2), ('a', 2)], [2, 2])
    """

    def __init__(self, images: Indexable, labels: Any, load: Callable[[Any], Any] | None = None) -> None:
        labels = as_indices(labels.cpu() if isinstance(labels, Tensor) else labels)
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


def as_indices(labels: Any) -> np.ndarray:
    """``labels`` as int64, refusing what a cast would change: names, and floats that are not whole numbers.

    Raises:
        ValueError: Naming a label that is not an integer.

    Example:
        >>> as_indices([0.0, 2.0, -1]).tolist()
        [0, 2, -1]
        >>> as_indices([0.7, 3.9])
        Traceback (most recent call last):
        ...
        ValueError: Expected labels as class indices (integers, -1: unknown) or multi-hot rows of 0 and 1, but got ...
    """
    values = np.asarray(labels)
    whole = values.dtype.kind in "iub" or (values.dtype.kind == "f" and bool(np.all(values == np.round(values))))
    if not whole:
        bad = values.flat[0] if values.dtype.kind not in "f" else values[values != np.round(values)].flat[0]
        raise ValueError(
            f"Expected labels as class indices (integers, -1: unknown) or multi-hot rows of 0 and 1, but got "
            f"{bad.item()!r} ({values.dtype}): give each class name its index (its position in the class names)."
        )
    return values.astype(np.int64)


def _index(label: RawLabel) -> int | None:
    """A label's class index when it is one: an ``int``, or a string that is an integer (``" 12"``, ``"+2"``)."""
    if isinstance(label, int):
        return label
    return int(label) if _INTEGER.fullmatch(label.strip()) else None


def is_unknown(label: RawLabel) -> bool:
    """Whether a raw label says "unknown class": ``-1`` (an int or the text ``"-1"``), as everywhere in SupCon.

    Example:
        >>> is_unknown(-1), is_unknown(" -1"), is_unknown("cat"), is_unknown(0)
        (True, True, False, False)
    """
    return _index(label) == UNKNOWN


def class_names(labels: Sequence[RawLabel], integer_text: bool = False) -> list[str]:
    """The classes of training labels, their type decided here once for every split: ``"0" .. "max"`` when every
    known label is a class index (an ``int``; with ``integer_text``, as for a CSV list, also a text that is an
    integer), else the sorted distinct names as written. Unknown labels (-1, :func:`is_unknown`) are no class.

    Raises:
        ValueError: For no known label, a class index below -1, or ``int`` labels mixed with names.

    Example:
        >>> class_names(["dog", "cat", "dog"]), class_names([2, 0, 2]), class_names(["1", "-1", " 3"], True)
        (['cat', 'dog'], ['0', '1', '2'], ['0', '1', '2', '3'])
        >>> class_names(["1", "2", "10", "other"], integer_text=True)  # one name: every label is a name
        ['1', '10', '2', 'other']
        >>> class_names(["1", "2", "10"])  # folder names are names
        ['1', '10', '2']
    """
    known = [label for label in labels if not is_unknown(label)]
    if not known:
        raise ValueError("Expected at least one training label (other than -1, unknown), but got none.")
    kinds = {type(label) for label in known}
    if len(kinds) > 1:
        names = sorted(kind.__name__ for kind in kinds)
        raise ValueError(f"Expected labels that are all class names or all class indices, but got {names}.")
    indices = [_index(label) if integer_text or isinstance(label, int) else None for label in known]
    if all(index is not None for index in indices):
        lowest = min(index for index in indices if index is not None)
        if lowest < 0:
            raise ValueError(f"Expected class indices >= 0 (or -1 for unknown), but got {lowest}.")
        return [str(i) for i in range(max(index for index in indices if index is not None) + 1)]
    return sorted({str(label).strip() for label in known})


def encode_labels(labels: Sequence[RawLabel], classes: Sequence[str], where: str) -> list[int]:
    """Class indices of ``labels`` against the training ``classes``, read as the training labels were: a name's
    position, an ``int`` as an index, a text integer as a name of an integer class (``"10"`` is class ``"10"``);
    -1 stays -1 (unknown).

    Args:
        labels: Raw labels, names or indices.
        classes: The training classes (:func:`class_names`).
        where: The source, for the error message (a file or folder, a split).

    Raises:
        ValueError: For a label that is not one of ``classes``.

    Example:
        >>> encode_labels(["dog", "cat"], ["cat", "dog"], "val.csv"), encode_labels([1, 0], ["a", "b"], "val")
        ([1, 0], [1, 0])
        >>> encode_labels(["2", "10", "-1"], ["1", "10", "2", "other"], "val.csv")
        [2, 1, -1]
        >>> encode_labels(["fox"], ["cat", "dog"], "val.csv")
        Traceback (most recent call last):
        ...
        ValueError: Label 'fox' in val.csv is not a class of the training set (2 classes: 'cat' ... 'dog').
    """
    index = {name: i for i, name in enumerate(classes)}
    integer_classes = list(classes) == [str(i) for i in range(len(classes))]
    out: list[int] = []
    for label in labels:
        if is_unknown(label):
            out.append(UNKNOWN)
            continue
        number = _index(label)
        if isinstance(label, int):
            i = label if 0 <= label < len(classes) else None
        else:
            i = index.get(str(number) if integer_classes and number is not None else label.strip())
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


#: A data set's splits (``MultiViewDataModule.dataset``); ``predict`` embeds any of them clean, in data-set order
#: (``predict_split``; the training set is the kNN bank of an offline evaluation, "ood" its ``--ood`` file).
Split = Literal["train", "val", "test", "ood"]
SPLITS: tuple[str, ...] = get_args(Split)


class SplitTypeError(TypeError):
    """A DataModule's split of the wrong type; the message says what to return (the command shows it in one line)."""


def check_split(
    owner: str, split: str, data: Any, num_classes: int, multilabel: bool = False
) -> LabelledDataset | None:
    """``data``, what ``owner.dataset(split)`` returned, if a DataModule can use it; else the error naming the fix.

    Args:
        owner: The DataModule's class name (for the messages).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"ood"``.
        data: The returned split: a :class:`LabelledDataset`, or ``None`` (for ``"test"`` and ``"ood"`` only).
        num_classes: Classes (labels per sample for multi-hot labels); class indices must lie in
            ``-1 .. num_classes - 1`` (-1: unknown). The labels of ``"ood"`` are not checked (they are not read).
        multilabel: The DataModule's ``multilabel`` (the command links it into the model): multi-hot labels
            ``(N, num_classes)`` of 0 and 1 then, class indices ``(N,)`` else.

    Raises:
        SplitTypeError: For something other than a ``LabelledDataset`` or ``None`` (a ``TypeError``).
        ValueError: For ``None`` as the training or validation split, an empty split, a class index out of range, or
            labels of the other kind than ``multilabel`` says, of another width or not 0/1.

    Example:
        >>> check_split("MyData", "val", LabelledDataset(["a", "b"], [0, 3]), num_classes=3)
        Traceback (most recent call last):
        ...
        ValueError: MyData.dataset('val') has labels up to 3, but num_classes = 3 (class indices 0 .. 2, -1: unknown)...
    """
    where = f"{owner}.dataset({split!r})"
    if data is None:
        if split in ("train", "val"):
            held_out = " (e.g. a seeded, stratified part of the training set)" if split == "val" else ""
            raise ValueError(f"Expected `{where}` to return the {split} split{held_out}, but got None.")
        return None
    if not isinstance(data, LabelledDataset):
        raise SplitTypeError(
            f"Expected `{where}` to return a LabelledDataset(images, labels) (samples that carry their labels) or "
            f"None, but got {type(data).__name__}."
        )
    if len(data) == 0:
        raise ValueError(f"`{where}` is empty: give it samples, or return None for a split the data set lacks.")
    if split == "ood":
        return data
    if (data.labels.ndim == 2) != multilabel:
        kind = "multi-hot rows (N, L)" if data.labels.ndim == 2 else "class indices (N,)"
        fix = "set `multilabel = True` on the DataModule" if data.labels.ndim == 2 else "give multi-hot rows"
        raise ValueError(
            f"{where} has labels of shape {data.labels.shape}, {kind}, but multilabel={multilabel}: {fix}."
        )
    if multilabel:
        if data.labels.shape[1] != num_classes or not np.isin(data.labels, (0, 1)).all():
            raise ValueError(
                f"{where} has multi-hot labels of shape {data.labels.shape} with values in [{data.labels.min()}, "
                f"{data.labels.max()}], but num_classes = {num_classes} labels of 0 or 1 are expected."
            )
    else:
        low, high = int(data.labels.min()), int(data.labels.max())
        if low < -1 or high >= num_classes:
            raise ValueError(
                f"{where} has labels {'down to ' + str(low) if low < -1 else 'up to ' + str(high)}, but "
                f"num_classes = {num_classes} (class indices 0 .. {num_classes - 1}, -1: unknown): set `num_classes`, "
                "or fix the labels."
            )
    return data


def check_predict_split(split: str) -> Split:
    """``split`` if it is one of :data:`SPLITS`, else a ``ValueError`` naming it and the allowed ones.

    Example:
        >>> check_predict_split("train")
        'train'
    """
    if split not in SPLITS:
        raise ValueError(f"Expected argument `predict_split` to be one of {SPLITS}, but got {split!r}.")
    return split  # type: ignore[return-value]
