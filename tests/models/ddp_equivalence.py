"""Train SupConModule for a few steps on fixed data with the Lightning Trainer and save the weights.

    python tests/models/ddp_equivalence.py DEVICES OUT.pt [--local] [--queue] [--batchnorm global|local|torch] [--gpu]
        [--micro-batch M]

Run by ``test_ddp.py`` once with 1 device and batch 16 and once with ``strategy="ddp"``, 2 CPU processes (gloo) and
batch 8 each. Each epoch is one global batch of all 16 samples, so the order in which Lightning's
DistributedSampler deals them out cannot matter: with the exact global-batch loss both runs must end with the same
weights. ``--local`` turns the global contrast off (the control, which must differ); ``--queue`` adds a memory
queue of two global batches (64 entries, so it wraps during the run), filled with the gathered batch under DDP.
``--batchnorm`` puts a BatchNorm layer into the encoder: ``global`` synchronises it with the
:class:`~lightning_supcon.plugins.GlobalBatchNormSync` plugin (must equal one process), ``local`` leaves each rank
normalising its own 8 samples (the control, which must differ), ``torch`` uses ``Trainer(sync_batchnorm=True)``
(PyTorch's SyncBatchNorm: GPUs only, with ``--gpu``). ``--micro-batch`` embeds each rank's batch ``M`` samples at a
time (gradient caching): it must still end where one process with the whole batch ends.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_supcon import OnlineEval, Queue, SupConLoss, SupConModule
from lightning_supcon.models.optimization import sgd
from lightning_supcon.plugins import GlobalBatchNormSync
from tests.helpers import ddp_trainer

SAMPLES = 16


class MLP(nn.Module):
    """The encoder; BN-free by default (unsynchronised batch statistics differ between 1 x 16 and 2 x 8)."""

    def __init__(self, batchnorm: bool = False) -> None:
        super().__init__()
        norm = nn.BatchNorm1d(32) if batchnorm else nn.Identity()
        self.net = nn.Sequential(nn.Linear(12, 32), norm, nn.Tanh(), nn.Linear(32, 16))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


def main(
    devices: int, out: str, local: bool, queue: bool, batchnorm: str | None, gpu: bool, micro_batch: int | None = None
) -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(SAMPLES) % 4
    centres = torch.randn(4, 12, generator=gen, dtype=torch.float64)
    views = centres[labels][:, None] + 0.5 * torch.randn(SAMPLES, 2, 12, generator=gen, dtype=torch.float64)
    pl.seed_everything(0)
    model = SupConModule(
        encoder=MLP(batchnorm=batchnorm is not None),
        feature_dim=16,
        num_classes=4,
        loss=SupConLoss(gather_distributed=not local),
        optimizer=sgd(lr=0.2, weight_decay=1e-4),
        micro_batch=micro_batch,
        online=OnlineEval(knn_k=0),
        queue=Queue(size=64) if queue else None,
    )
    during_fit: set[str] = set()
    record = pl.callbacks.LambdaCallback(on_train_start=lambda _, module: during_fit.update(_norm_layers(module)))
    loader = DataLoader(TensorDataset(views, labels), batch_size=SAMPLES // devices, shuffle=True)
    trainer = ddp_trainer(
        Path(out).parent,
        devices,
        accelerator="gpu" if gpu else "cpu",
        sync_batchnorm=batchnorm == "torch",
        plugins=[GlobalBatchNormSync()] if batchnorm == "global" else None,
        max_epochs=4,
        precision="64-true",
        callbacks=[record],
    )
    trainer.fit(model, loader)
    if trainer.global_rank == 0:
        global_batch = trainer.callback_metrics["train/global_batch"].item()
        state_dict = {k: v.cpu() for k, v in model.state_dict().items()}
        torch.save(
            {
                "state_dict": state_dict,
                "global_batch": global_batch,
                "contrast_size": trainer.callback_metrics["train/contrast_size"].item(),
                "class_positives": trainer.callback_metrics["train/anchors_with_class_positives"].item(),
                "norm_during_fit": sorted(during_fit),
                "norm_after_fit": _norm_layers(model),
            },
            out,
        )


def _norm_layers(model: nn.Module) -> list[str]:
    """The class names of the model's BatchNorm layers."""
    return sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("devices", type=int)
    parser.add_argument("out")
    parser.add_argument("--local", action="store_true")
    parser.add_argument("--queue", action="store_true")
    parser.add_argument("--batchnorm", choices=("global", "local", "torch"))
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--micro-batch", type=int)
    args = parser.parse_args()
    main(args.devices, args.out, args.local, args.queue, args.batchnorm, args.gpu, args.micro_batch)
