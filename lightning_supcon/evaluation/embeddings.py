"""Read the embeddings that ``lightning-supcon predict`` writes (:class:`~lightning_supcon.callbacks.EmbeddingWriter`).

A file is ``embeddings_<split>.pt`` (a dict of tensors, read with ``torch.load(weights_only=True)``) or the same arrays
in ``embeddings_<split>.npz``; each holds per-sample ``features`` (or another key, e.g. ``projections``) and
``labels``: integer classes ``(N,)`` (``-1``: unknown) or multi-hot 0/1 labels ``(N, L)`` of a multi-label data set.
Reading needs neither the model nor its checkpoint.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lightning_supcon.utils.files import FileReadError, read_torch_file

SUFFIXES = (".pt", ".npz")


class EmbeddingsError(FileReadError):
    """An embeddings file that is missing, of another kind, or without the features or labels asked for (a
    :class:`~lightning_supcon.utils.files.FileReadError`, the package's error for files the user names)."""


#: The key of the class names in an embeddings file: their JSON list as UTF-8 bytes, a uint8 tensor, so that the
#: ``.pt`` file stays a dict of tensors (``weights_only``) and the ``.npz`` needs no pickle.
CLASS_NAMES_KEY = "class_names"


@dataclass(frozen=True)
class Embeddings:
    """Per-sample features ``(N, D)`` (float32 or float64) and int64 labels, classes ``(N,)`` or multi-hot
    ``(N, L)``, read from ``path``, and the class names (``class_names[label]``) when the file has them."""

    features: Tensor
    labels: Tensor
    path: Path
    class_names: tuple[str, ...] | None = None

    @property
    def multilabel(self) -> bool:
        """Whether the labels are multi-hot ``(N, L)``."""
        return self.labels.ndim == 2


def class_names_tensor(names: list[str]) -> Tensor:
    """Class names as the uint8 tensor an embeddings file stores (:data:`CLASS_NAMES_KEY`).

    Example:
        >>> read_class_names(class_names_tensor(["zero digit", "één", "二 two"]))
        ('zero digit', 'één', '二 two')
    """
    return torch.tensor(list(json.dumps(list(names), ensure_ascii=False).encode("utf-8")), dtype=torch.uint8)


def read_class_names(stored: Tensor) -> tuple[str, ...]:
    """The class names of :func:`class_names_tensor`."""
    return tuple(json.loads(bytes(stored.to(torch.uint8).tolist()).decode("utf-8")))


def _read(path: Path) -> dict[str, Tensor]:
    """Every array of a ``.pt`` or ``.npz`` file, as tensors."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                return {name: torch.from_numpy(arrays[name]) for name in arrays.files}
        loaded = read_torch_file(path, what="embeddings")
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as err:  # FileReadError is a ValueError
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        message = f"Cannot read embeddings {path}: not a file written by EmbeddingWriter ({reason})."
        raise EmbeddingsError(message) from None
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise EmbeddingsError(
            f"Cannot read embeddings {path}: expected a dict of tensors (EmbeddingWriter's format), but got "
            f"{type(loaded).__name__}."
        )
    return loaded


def load_embeddings(path: str | Path, key: str = "features") -> Embeddings:
    """The ``key`` rows and the labels of an embeddings file.

    Args:
        path: A ``.pt`` or ``.npz`` file written by ``EmbeddingWriter``.
        key: Which per-sample tensor to read as features: ``"features"`` (the encoder's, what the paper evaluates),
            ``"projections"`` or any other 2-D float tensor of the file.

    Returns:
        The features (float64 kept, other floats as float32), the labels as int64 and the path.

    Raises:
        EmbeddingsError: If the file is missing, not a ``.pt``/``.npz`` file of tensors, has no ``key`` (the message
            lists the keys it has) or no ``labels``, or their shapes disagree.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "embeddings_val.pt"
        >>> torch.save({"features": torch.randn(4, 3), "labels": torch.tensor([0, 1, 0, 1])}, path)
        >>> load_embeddings(path).features.shape
        torch.Size([4, 3])
        >>> load_embeddings(path, key="projections")
        Traceback (most recent call last):
        ...
        lightning_supcon.evaluation.embeddings.EmbeddingsError: ...has no `projections`; it has: features, labels.
    """
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise EmbeddingsError(f"Expected an embeddings file ending in {' or '.join(SUFFIXES)}, but got {path}.")
    if not path.is_file():
        raise EmbeddingsError(
            f"Cannot read embeddings {path}: no such file (write it with `lightning-supcon predict`)."
        )
    tensors = _read(path)
    for name, hint in ((key, ""), ("labels", " (predict on a DataModule whose batches carry labels)")):
        if name not in tensors:
            names = sorted(tensors)
            more = f" and {len(names) - 8} more" if len(names) > 8 else ""  # a state dict has hundreds of keys
            raise EmbeddingsError(f"{path} has no `{name}`{hint}; it has: {', '.join(names[:8])}{more}.")
    features, labels = tensors[key], tensors["labels"]
    if features.ndim != 2 or not features.is_floating_point():
        raise EmbeddingsError(
            f"Expected `{key}` of {path} to be float (N, D), but got {features.dtype} {tuple(features.shape)}."
        )
    if labels.ndim == 2 and labels.shape[0] == features.shape[0] and labels.shape[1] >= 2 and not labels.is_complex():
        if not bool(((labels == 0) | (labels == 1)).all()):  # multi-hot, of any dtype (a float 0/1 target too)
            raise EmbeddingsError(f"Expected multi-hot `labels` (N, L) of 0s and 1s in {path}, but got other values.")
    elif labels.shape != (features.shape[0],) or labels.is_floating_point() or labels.is_complex():
        raise EmbeddingsError(
            f"Expected integer `labels` (N,) = ({features.shape[0]},) or multi-hot 0/1 labels ({features.shape[0]}, "
            f"L >= 2) in {path}, but got {labels.dtype} {tuple(labels.shape)}."
        )
    if features.dtype != torch.float64:
        features = features.float()
    class_names = read_class_names(tensors[CLASS_NAMES_KEY]) if CLASS_NAMES_KEY in tensors else None
    return Embeddings(features, labels.long(), path, class_names)


def check_pair(train: Embeddings, test: Embeddings, name: str = "test") -> None:
    """Raise :class:`EmbeddingsError` unless the training and test embeddings can be compared.

    Both need rows and the same feature size (the same model's ``predict`` on two splits); a test split needs the
    training split's kind of labels (classes, or multi-hot of the same width).

    Args:
        train: The training embeddings.
        test: The embeddings compared with them.
        name: What ``test`` is, for the message (``"test"``, ``"out-of-distribution"``).
    """
    for what, embeddings in (("training", train), (name, test)):
        if embeddings.features.shape[0] == 0:
            raise EmbeddingsError(f"The {what} embeddings {embeddings.path} have no rows.")
    if name == "test" and train.labels.shape[1:] != test.labels.shape[1:]:
        kinds = [f"{tuple(e.labels.shape[1:]) or 'class'} labels in {e.path}" for e in (train, test)]
        raise EmbeddingsError(f"The training and test embeddings have different kinds of labels: {' vs '.join(kinds)}.")
    if train.features.shape[1] != test.features.shape[1]:
        raise EmbeddingsError(
            f"The training and {name} embeddings have different feature sizes ({train.features.shape[1]} in "
            f"{train.path}, {test.features.shape[1]} in {test.path}): were they written by the same model?"
        )
