"""The contract between a model and a DataModule for evaluation against the training set: the kNN bank and the
out-of-distribution (OOD) split, both read at the end of an evaluation epoch.

The online kNN classifies evaluation features against the features of the clean training set (the bank). The
DataModule supplies it through one method, ``train_eval_dataloader()`` (the :class:`TrainBankSource` protocol):
the training set without augmentation, shuffle or drop_last, sharded without repeats under DDP. A DataModule may
also name an OOD split, ``ood_dataloader()`` (the :class:`OODSource` protocol): clean batches of samples from none
of its classes (labels -1), in order and sharded the same way (a rank may get none), or ``None`` when it has no such
split. The model reads both at the end of each validation or test epoch with :func:`bank_batches` and
:func:`loader_batches`, so neither is a second evaluation loader: Lightning reports every metric once, under its
own name (no "DataLoader 1" column), and the test stage reports ``test/knn_*`` as validation reports ``val/knn_*``.

The parties: ``data/base.py`` (``train_eval_dataloader``, ``ood_dataloader``),
:class:`~lightning_supcon.models.online_eval.OnlineEvaluation` and the LightningModules that own one (the passes).
"""

from __future__ import annotations

import itertools
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


@runtime_checkable
class OODSource(Protocol):
    """A DataModule that may supply an out-of-distribution split for the online OOD metrics."""

    def ood_dataloader(self) -> DataLoader | None:
        """Clean OOD batches ``(images, labels)`` (labels -1) in order, each sample on one rank; ``None``: no OOD
        split."""
        ...


def batch_limit(trainer: pl.Trainer, num_batches: int) -> int:
    """How many batches of a loader read at the epoch's end to read, following the Trainer's limits for the running
    evaluation (sanity check, ``fast_dev_run``, ``limit_val_batches`` or ``limit_test_batches``)."""
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


def loader_batches(trainer: pl.Trainer, loader: DataLoader) -> Iterator[tuple[Tensor, Tensor]]:
    """The first :func:`batch_limit` batches ``(images, labels)`` of ``loader`` on the model's device, after the
    DataModule's batch-transfer hooks (e.g. normalisation on the device)."""
    # islice: a batch past the limit is never loaded (a `break` after `enumerate` loads one more)
    for batch in itertools.islice(loader, batch_limit(trainer, len(loader))):
        images, labels = trainer.strategy.batch_to_device(batch, dataloader_idx=0)
        yield images, labels


def bank_batches(trainer: pl.Trainer) -> Iterator[tuple[Tensor, Tensor]]:
    """The bank's batches (:func:`loader_batches` of ``train_eval_dataloader()``); nothing when the Trainer has no
    :class:`TrainBankSource` DataModule. The loader is built only when the iterator is first advanced."""
    datamodule = getattr(trainer, "datamodule", None)
    if isinstance(datamodule, TrainBankSource):
        yield from loader_batches(trainer, datamodule.train_eval_dataloader())


def ood_loader(trainer: pl.Trainer) -> DataLoader | None:
    """The DataModule's OOD split (``ood_dataloader()``), or ``None`` when the Trainer's DataModule is not an
    :class:`OODSource` or has no OOD split. Read it with :func:`loader_batches`."""
    datamodule = getattr(trainer, "datamodule", None)
    return datamodule.ood_dataloader() if isinstance(datamodule, OODSource) else None
