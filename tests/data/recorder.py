"""A LightningModule that records the batches it is given, and a Trainer factory for short CPU runs."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from tests import helpers


class Recorder(pl.LightningModule):
    """Keeps every training and validation batch (per dataloader index); its loss trains one dummy weight."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.train_batches: list[tuple[Tensor, Tensor]] = []
        self.val_batches: dict[int, list[tuple[Tensor, Tensor]]] = defaultdict(list)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        views, labels = batch
        self.train_batches.append((views.clone(), labels.clone()))
        return self.weight * views.float().mean()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        images, labels = batch
        self.val_batches[dataloader_idx].append((images.clone(), labels.clone()))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def cpu_trainer(root: Path, **kwargs: Any) -> pl.Trainer:
    """One short epoch on the CPU, no logger, checkpoint, progress bar or sanity check."""
    return helpers.cpu_trainer(root, **({"max_epochs": 1, "num_sanity_val_steps": 0} | kwargs))
