"""Effect of the memory queue at a small batch: SupCon on the embedded digits with and without a queue.

    python benchmarks/memory_queue.py                     # batch 16 x 2 views, queue 0 / 1024 / 1024 + momentum encoder
    python benchmarks/memory_queue.py --seeds 3 --epochs 10

Same encoder (small CNN), epochs and seeds for every setting; prints the validation kNN and linear-probe top-1
(mean +- std over seeds) and the wall time, with the machine.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from common import digits_supcon, machine

from lightning_supcon import Queue

SETTINGS: dict[str, Queue | None] = {
    "no queue": None,
    "queue 1024": Queue(size=1024),
    "queue 1024 + momentum encoder 0.99": Queue(size=1024, momentum=0.99),
}


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
        results = [digits_supcon(seed, args.batch, args.epochs, queue=queue) for seed in range(args.seeds)]
        times = [r["seconds"] for r in results]

        def fmt(key: str, results: list[dict[str, float]] = results) -> str:
            values = [100 * r[key] for r in results]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.2f} ± {spread:.2f}"

        print(f"| {name} | {fmt('knn')} | {fmt('probe')} | {statistics.mean(times):.0f} |")


if __name__ == "__main__":
    main()
