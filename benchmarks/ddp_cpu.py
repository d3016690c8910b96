"""1 vs 2 CPU processes (DDP, gloo) on the embedded digits: throughput and the batch the loss sees, and the cost
of synchronising BatchNorm over the processes (``GlobalBatchNormSync``).

    python benchmarks/ddp_cpu.py              # both settings, side by side
    python benchmarks/ddp_cpu.py --steps 60

Each setting runs in its own subprocess (Lightning's DDP launcher re-runs this file for rank 1). Per-process batch
is fixed (``--batch``), so with 2 processes the loss contrasts against 2x the samples. On a 2-core machine the two
processes share the cores: this measures the cost of the gather and of DDP, not a speed-up. The small CNN has 3
BatchNorm layers; with the plugin each costs an all-gather of 2 x channels + 1 numbers forward and an all-reduce of
2 x channels backward.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytorch_lightning as pl
import torch
from common import machine

from lightning_supcon import DigitsDataModule, OnlineEval, SupConModule
from lightning_supcon.models.optimization import sgd
from lightning_supcon.plugins import GlobalBatchNormSync

SETTINGS = ((1, False), (2, False), (2, True))  # (processes, synchronised BatchNorm)


class StepTimer(pl.Callback):
    """Wall time of the training steps after a warm-up."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = 0.0
        self.steps = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if trainer.global_step > self.warmup:
            self.steps = trainer.global_step - self.warmup


def worker(devices: int, sync_bn: bool, batch: int, steps: int, out: str) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // devices))
    pl.seed_everything(0)
    timer = StepTimer(warmup=5)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        plugins=[GlobalBatchNormSync()] if sync_bn else None,
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    model = SupConModule(
        encoder="small_cnn",
        in_channels=1,
        num_classes=10,
        optimizer=sgd(lr=0.1, weight_decay=1e-4),
        online=OnlineEval(knn_k=0),
    )
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=batch, augment_on="device"))
    elapsed = time.perf_counter() - timer.start
    if trainer.global_rank == 0:
        result = {
            "devices": devices,
            "batchnorm": "global (GlobalBatchNormSync)" if sync_bn else "per process",
            "global_batch": trainer.callback_metrics["train/global_batch"].item(),
            "images_per_s": timer.steps * batch * devices * 2 / elapsed,  # 2 views
            "steps_per_s": timer.steps / elapsed,
        }
        with open(out, "w") as f:
            json.dump(result, f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128, help="per process")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--sync-bn", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.sync_bn, args.batch, args.steps, args.out)
        return
    rows = []
    for devices, sync_bn in SETTINGS:
        out = f"/tmp/ddp_cpu_{os.getpid()}_{devices}_{int(sync_bn)}.json"
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            str(devices),
            "--batch",
            str(args.batch),
            "--steps",
            str(args.steps),
            *(["--sync-bn"] if sync_bn else []),
        ]
        env = os.environ | {"MASTER_ADDR": "127.0.0.1"}
        subprocess.run([*cmd, "--out", out], check=True, env=env, capture_output=True)
        with open(out) as f:
            rows.append(json.load(f))
        os.remove(out)
    print(f"SupCon on digits, small CNN, {args.batch} samples x 2 views per process; machine: {machine()}\n")
    print("| processes | BatchNorm statistics | global batch seen by the loss | images/s (all processes) | steps/s |")
    print("|---:|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['devices']} | {r['batchnorm']} | {r['global_batch']:.0f} | {r['images_per_s']:.0f} "
            f"| {r['steps_per_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
