"""Train SupConModule for a few steps on fixed data with the Lightning Trainer and save the weights.

    python tests/models/ddp_equivalence.py DEVICES OUT.pt [--local]

Run by ``test_ddp.py`` once with 1 device and batch 16 and once with ``strategy="ddp"``, 2 CPU processes (gloo) and
batch 8 each. Each epoch is one global batch of all 16 samples, so the order in which Lightning's
DistributedSampler deals them out cannot matter: with the exact global-batch loss both runs must end with the same
weights. ``--local`` turns the global contrast off (the control, which must differ); ``--queue`` adds a memory
queue of two global batches (64 entries, so it wraps during the run), filled with the gathered batch under DDP.
"""

from __future__ import annotations

import sys

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_supcon import SupConModule

SAMPLES = 16


class MLP(nn.Module):
    """A BN-free encoder (batch norm statistics would differ between 1 x 16 and 2 x 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 16))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


def main(devices: int, out: str, local: bool, queue: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(SAMPLES) % 4
    centres = torch.randn(4, 12, generator=gen, dtype=torch.float64)
    views = centres[labels][:, None] + 0.5 * torch.randn(SAMPLES, 2, 12, generator=gen, dtype=torch.float64)
    pl.seed_everything(0)
    model = SupConModule(
        encoder=MLP(),
        feature_dim=16,
        num_classes=4,
        knn_k=0,
        lr=0.2,
        weight_decay=1e-4,
        contrast_global=not local,
        queue_size=64 if queue else 0,
    )
    loader = DataLoader(TensorDataset(views, labels), batch_size=SAMPLES // devices, shuffle=True)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=4,
        precision="64-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    if trainer.global_rank == 0:
        global_batch = trainer.callback_metrics["train/global_batch"].item()
        torch.save({"state_dict": model.state_dict(), "global_batch": global_batch}, out)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], "--local" in sys.argv, "--queue" in sys.argv)
