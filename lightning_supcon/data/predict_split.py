"""Which split ``lightning-supcon predict`` embeds: the DataModule's ``predict_split`` and the loader it picks.

``predict`` writes what the model returns for every sample of one split (see
:class:`~lightning_supcon.callbacks.EmbeddingWriter`); to evaluate an embedding offline
(:mod:`lightning_supcon.evaluate`) one runs it twice, once on the training split (the kNN bank) and once on the
split to evaluate. Every split is clean: no augmentation, in data-set order.
"""

from __future__ import annotations

from typing import Literal, Protocol, get_args

from torch.utils.data import DataLoader

PredictSplit = Literal["train", "val", "test"]
PREDICT_SPLITS: tuple[str, ...] = get_args(PredictSplit)


class CleanLoaders(Protocol):
    """The clean loaders of :class:`~lightning_supcon.data.MultiViewDataModule`."""

    def train_eval_dataloader(self) -> DataLoader: ...

    def val_dataloader(self) -> DataLoader | list[DataLoader]: ...

    def test_dataloader(self) -> DataLoader: ...


def check_predict_split(split: str) -> PredictSplit:
    """``split`` if it is one of :data:`PREDICT_SPLITS`.

    Raises:
        ValueError: Naming the bad value and the allowed ones.

    Example:
        >>> check_predict_split("train")
        'train'
    """
    if split not in PREDICT_SPLITS:
        raise ValueError(f"Expected argument `predict_split` to be one of {PREDICT_SPLITS}, but got {split!r}.")
    return split  # type: ignore[return-value]


def predict_loader(datamodule: CleanLoaders, split: PredictSplit) -> DataLoader:
    """The clean loader of ``split``: the training set in order, the validation set (without the kNN bank loader
    that ``val_dataloader`` may add), or the test set (the validation set when there is none)."""
    if split == "train":
        return datamodule.train_eval_dataloader()
    if split == "test":
        return datamodule.test_dataloader()
    loaders = datamodule.val_dataloader()
    return loaders[0] if isinstance(loaders, list) else loaders
