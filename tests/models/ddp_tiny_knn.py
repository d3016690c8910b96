"""Validate with the online kNN on 2 CPU processes (gloo) when the sets are tiny and split unevenly.

    python tests/models/ddp_tiny_knn.py DEVICES OUT.pt

3 validation samples (2 on rank 0, 1 on rank 1) and a bank of 5 (3 / 2): the ranks run different numbers of rows
and the kNN's gathers must still pair up (a rank that skipped them would leave the other waiting forever). Run by
``test_online_eval.py`` with 1 and 2 devices; the kNN accuracy must be the same.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from lightning_supcon import MultiViewDataModule, OnlineEval, SupConModule
from lightning_supcon.data import LabelledDataset
from tests.helpers import ddp_trainer


class Tiny(MultiViewDataModule):
    num_classes, in_channels, image_size, mean, std = 2, 1, 8, (0.5,), (0.25,)

    def _split(self, n: int, seed: int) -> LabelledDataset:
        images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
        return LabelledDataset(images, torch.arange(n) % 2)

    def dataset(self, split: str) -> LabelledDataset | None:
        return {"train": self._split(5, 0), "val": self._split(3, 1)}.get(split)


def main(devices: int, out: str) -> None:
    pl.seed_everything(0)
    model = SupConModule(encoder="small_cnn", in_channels=1, num_classes=2, online=OnlineEval(knn_k=3))
    trainer = ddp_trainer(Path(out).parent, devices)
    (metrics,) = trainer.validate(model, datamodule=Tiny(batch_size=2, eval_batch_size=4), verbose=False)
    if trainer.global_rank == 0:
        torch.save(metrics, out)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
