"""Validate with two ``EmbeddingPlot`` callbacks on 2 CPU processes (DDP, gloo) over a set that splits unevenly.

    python tests/callbacks/ddp_embedding_plot.py OUTPUT_DIR

Run by ``test_embedding_plot.py``. Sample ``i`` has the input ``[i, -i]`` and label ``i % 3``, the model's features
are its inputs. One callback keeps every point (``all/``), the other at most 5 (``five/``); each saves the points it
plotted, gathered from both ranks, as ``points.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_supcon.callbacks.embedding_plot import EmbeddingPlot
from tests.helpers import ddp_trainer

SAMPLES = 7


class Identity(pl.LightningModule):
    def forward(self, x: Tensor) -> Tensor:
        return x

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        pass


class RecordingPlot(EmbeddingPlot):
    def _plot(self, trainer: pl.Trainer) -> None:
        assert self._pending is not None and self.dirpath is not None
        features, labels, _, _ = self._pending
        Path(self.dirpath).mkdir(parents=True, exist_ok=True)
        torch.save({"features": features, "labels": labels, "rank": trainer.global_rank}, f"{self.dirpath}/points.pt")
        super()._plot(trainer)


def main(output_dir: str) -> None:
    inputs = torch.stack([torch.arange(SAMPLES), -torch.arange(SAMPLES)], dim=1).float()
    loader = DataLoader(TensorDataset(inputs, torch.arange(SAMPLES) % 3), batch_size=2)
    trainer = ddp_trainer(
        output_dir,
        2,
        callbacks=[
            RecordingPlot(method="pca", dirpath=f"{output_dir}/all"),
            RecordingPlot(method="pca", max_points=5, dirpath=f"{output_dir}/five"),
        ],
    )
    trainer.validate(Identity(), loader, verbose=False)


if __name__ == "__main__":
    main(sys.argv[1])
