"""Validate an untrained SupConModule on the digits with the Lightning Trainer and save the metrics.

    python tests/models/ddp_validate.py DEVICES OUT.pt

Run by ``test_ddp.py`` with 1 device and with ``strategy="ddp"`` on 2 CPU processes (gloo). The held-out split
has 91 images (odd): each rank gets its own 46 or 45 of them and runs 4 or 3 evaluation batches of 15, so the
evaluation must neither repeat samples (as Lightning's default DistributedSampler does to even out the shards)
nor wait in a per-step collective. The kNN and probe accuracies must then equal one process's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from lightning_supcon import DigitsDataModule, OnlineEval, SupConModule
from tests.helpers import ddp_trainer


def main(devices: int, out: str) -> None:
    pl.seed_everything(0)
    datamodule = DigitsDataModule(image_size=8, val_fraction=0.0501, batch_size=32, eval_batch_size=15)
    model = SupConModule(encoder="small_cnn", in_channels=1, num_classes=10, online=OnlineEval(knn_k=20))
    trainer = ddp_trainer(Path(out).parent, devices)
    results = trainer.validate(model, datamodule=datamodule, verbose=False)  # one dict: the kNN bank is no loader
    metrics = {key: value for result in results for key, value in result.items()}
    if trainer.global_rank == 0:
        torch.save({"metrics": metrics, "val_size": len(datamodule.dataset("val"))}, out)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
