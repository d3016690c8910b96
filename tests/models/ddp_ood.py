"""Validate and test with the online OOD metrics on 2 CPU processes (gloo) with uneven shards, and save them.

    python tests/models/ddp_ood.py DEVICES OUT.pt

:class:`OODDigits` (also the DataModule of ``test_evaluation_hooks.py``): a few digits and an OOD split of inverted
digits. Here 41 validation samples (21 on rank 0, 20 on rank 1), a bank of 100, and an OOD split of 3 samples for
``validate`` (2 / 1) and of 1 sample for ``test`` (rank 1's OOD shard is empty, yet it joins every gather). Run by
``test_evaluation_hooks.py`` with 1 and 2 devices: the logged ``{stage}/ood_*`` must be the same.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_supcon import DigitsDataModule, OnlineEval, SupConModule
from lightning_supcon.data import LabelledDataset
from tests.helpers import ddp_trainer


class OODDigits(DigitsDataModule):
    """8x8 digits cut to ``train_size`` and ``val_size`` samples, with an OOD split of ``ood_size`` other held-out
    digits, every other one inverted (labels -1; ``ood_size=None``: no OOD split), so the metrics are neither 0 nor
    1. Counts its OOD loaders and loaded OOD images."""

    def __init__(self, train_size: int = 100, val_size: int = 41, ood_size: int | None = 30, **kwargs: Any) -> None:
        super().__init__(image_size=8, batch_size=16, **kwargs)
        self.train_size, self.val_size, self.ood_size = train_size, val_size, ood_size
        self.ood_loaders = self.ood_loads = 0

    def dataset(self, split: str) -> LabelledDataset | None:  # type: ignore[override]
        digits = super().dataset("val" if split == "ood" else split)  # type: ignore[arg-type]
        if digits is None or split == "test":
            return None
        if split != "ood":
            return digits.subset(np.arange(self.train_size if split == "train" else self.val_size))
        if self.ood_size is None:
            return None
        held_out = digits.images
        assert isinstance(held_out, Tensor)  # uint8 (N, 1, 8, 8)
        images = held_out[self.val_size : self.val_size + self.ood_size].clone()
        images[1::2] = 255 - images[1::2]  # every other one inverted (far); the others are unseen digits (near)
        return LabelledDataset(images, np.zeros(self.ood_size), load=self._count)  # the base makes the labels -1

    def _count(self, image: Tensor) -> Tensor:
        self.ood_loads += 1
        return image

    def ood_dataloader(self) -> DataLoader | None:
        """The base's loader (sharded without repeats, a rank possibly empty), counted; ``ood_size`` may change
        between runs, so the split is rebuilt each time."""
        self.ood_loaders += 1
        self._datasets.pop("ood", None)
        return super().ood_dataloader()


def main(devices: int, out: str) -> None:
    pl.seed_everything(0)
    model = SupConModule(encoder="small_cnn", in_channels=1, num_classes=10, online=OnlineEval(knn_k=3, ood_k=5))
    trainer = ddp_trainer(Path(out).parent, devices)
    datamodule = OODDigits(ood_size=3, eval_batch_size=8)
    (val,) = trainer.validate(model, datamodule=datamodule, verbose=False)
    datamodule.ood_size = 1
    (test,) = trainer.test(model, datamodule=datamodule, verbose=False)
    if trainer.global_rank == 0:
        torch.save({**val, **test}, out)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
