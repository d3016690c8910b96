"""The contract between a model and a DataModule for kNN evaluation: where the kNN bank comes from.

The online kNN classifies evaluation features against the features of the clean training set (the bank). The
DataModule supplies it through one method, ``train_eval_dataloader()`` (the :class:`TrainBankSource` protocol):
the training set without augmentation, shuffle or drop_last, sharded without repeats under DDP. The model reads it
at the end of each validation or test epoch with :func:`bank_batches`, so the bank is not a second evaluation
loader: Lightning reports every metric once, under its own name (no "DataLoader 1" column), and the test stage
reports ``test/knn_*`` as validation reports ``val/knn_*``.

The parties: ``data/base.py`` (``train_eval_dataloader``), :class:`~lightning_supcon.models.online_eval.
OnlineEvaluation` and the LightningModules that own one (the bank pass).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import pytorch_lightning as pl
from torch import Tensor
from torch.utils.data import DataLoader


@runtime_checkable
class TrainBankSource(Protocol):
    """A DataModule that supplies the clean training set for the kNN bank."""

    def train_eval_dataloader(self) -> DataLoader:
        """Clean training batches ``(images, labels)`` in order."""
        ...


def batch_limit(trainer: pl.Trainer, num_batches: int) -> int:
    """How many bank batches to read, following the Trainer's limits for the running evaluation (sanity check,
    ``fast_dev_run``, ``limit_val_batches`` or ``limit_test_batches``)."""
    if trainer.sanity_checking:
        return min(num_batches, int(trainer.num_sanity_val_steps))
    fast_dev_run = getattr(trainer, "fast_dev_run", False)  # set by the Trainer's debugging flags
    if fast_dev_run:
        return min(num_batches, int(fast_dev_run))
    limit = trainer.limit_test_batches if trainer.testing else trainer.limit_val_batches
    if limit is None:
        return num_batches
    if isinstance(limit, int):
        return min(num_batches, limit)
    if limit <= 0:
        return 0
    return max(1, math.floor(num_batches * limit))  # a fraction, as Lightning counts it


def bank_batches(trainer: pl.Trainer) -> Iterator[tuple[Tensor, Tensor]]:
    """The bank's batches ``(images, labels)`` on the model's device, after the DataModule's batch-transfer hooks
    (e.g. normalisation on the device); nothing when the Trainer has no :class:`TrainBankSource` DataModule."""
    datamodule = getattr(trainer, "datamodule", None)
    if not isinstance(datamodule, TrainBankSource):
        return
    loader = datamodule.train_eval_dataloader()
    limit = batch_limit(trainer, len(loader))
    for index, batch in enumerate(loader):
        if index >= limit:
            break
        images, labels = trainer.strategy.batch_to_device(batch, dataloader_idx=0)
        yield images, labels
