"""Effect of the memory queue at a small batch: SupCon on the embedded digits with and without a queue.

    python benchmarks/memory_queue.py                     # batch 16 x 2 views, queue 0 / 1024 / 1024 + momentum encoder
    python benchmarks/memory_queue.py --seeds 3 --epochs 10

Same encoder (small CNN), epochs and seeds for every setting; prints the validation kNN and linear-probe top-1
(mean +- std over seeds) and the wall time, with the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pytorch_lightning as pl
import torch
from common import machine, quiet_trainer

from lightning_supcon import DigitsDataModule, Queue, Schedule, SupConModule
from lightning_supcon.models.optimization import sgd

SETTINGS: dict[str, tuple[int, float | None]] = {  # queue_size, queue_momentum
    "no queue": (0, None),
    "queue 1024": (1024, None),
    "queue 1024 + momentum encoder 0.99": (1024, 0.99),
}


def run(seed: int, batch: int, epochs: int, queue_size: int, queue_momentum: float | None) -> dict[str, float]:
    pl.seed_everything(seed, verbose=False)
    model = SupConModule(
        encoder="small_cnn",
        in_channels=1,
        num_classes=10,
        optimizer=sgd(lr=0.05, weight_decay=1e-4),
        schedule=Schedule(warmup_epochs=1),
        queue=Queue(size=queue_size, momentum=queue_momentum),
    )
    trainer = quiet_trainer(epochs, validate=True, check_val_every_n_epoch=epochs)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=batch, augment_on="device"))
    metrics = trainer.callback_metrics
    return {"knn": metrics["val/knn_top1"].item(), "probe": metrics["val/probe_top1"].item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"SupCon on digits, small CNN, batch {args.batch} x 2 views, {args.epochs} epochs, {args.seeds} seeds")
    print(f"machine: {machine()}\n")
    print("| setting | val kNN top-1 (%) | val probe top-1 (%) | time per run (s) |")
    print("|---|---:|---:|---:|")
    for name, queue in SETTINGS.items():
        results, times = [], []
        for seed in range(args.seeds):
            start = time.perf_counter()
            results.append(run(seed, args.batch, args.epochs, *queue))
            times.append(time.perf_counter() - start)

        def fmt(key: str, results: list[dict[str, float]] = results) -> str:
            values = [100 * r[key] for r in results]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.2f} ± {spread:.2f}"

        print(f"| {name} | {fmt('knn')} | {fmt('probe')} | {statistics.mean(times):.0f} |")


if __name__ == "__main__":
    main()
