"""Predict with ``EmbeddingWriter`` on 2 CPU processes (DDP, gloo) over a data set that splits unevenly.

    python tests/callbacks/ddp_embedding_writer.py OUTPUT_DIR

Run by ``test_embedding_writer.py``. Sample ``i`` has the input ``[i, -i]`` and label ``i % 3``; the encoder
doubles its input, so the written features must be ``2 * [i, -i]`` in data-set order for all 7 samples.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_supcon.callbacks.embedding_writer import EmbeddingWriter
from lightning_supcon.models.cross_entropy import CrossEntropyModule
from tests.helpers import ddp_trainer

SAMPLES = 7


class Double(nn.Module):
    feature_dim = 2

    def forward(self, x: Tensor) -> Tensor:
        return 2 * x


def main(output_dir: str) -> None:
    inputs = torch.stack([torch.arange(SAMPLES), -torch.arange(SAMPLES)], dim=1).float()
    loader = DataLoader(TensorDataset(inputs, torch.arange(SAMPLES) % 3), batch_size=2)
    trainer = ddp_trainer(output_dir, 2, callbacks=[EmbeddingWriter(output_dir)])
    trainer.predict(CrossEntropyModule(encoder=Double(), num_classes=3), loader, return_predictions=False)


if __name__ == "__main__":
    main(sys.argv[1])
