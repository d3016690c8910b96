"""Memory and time of the kNN monitor (``KNNAccuracy``) with its bank sharded over 1 or 2 processes (gloo, CPU).

    python benchmarks/knn.py                                  # bank 200,000 x 512, 10,000 queries, 1000 classes
    python benchmarks/knn.py --bank 50000 --queries 2500      # a quarter of each: 1/16 of the work

Each setting runs in its own subprocess, which spawns the ranks. Every rank generates only its shard of a synthetic
clustered bank (the same global bank for every setting) and its share of the queries, so its memory holds the shard,
not the bank. Per rank: the wall time of ``compute`` and the peak resident memory (``VmHWM``, reset after the imports
through ``/proc/self/clear_refs``, Linux), also less the resident memory before the data was made (the imports).
Threads per rank: cores / processes, so each setting uses the whole machine. The last column compares the top-1 and
top-5 with the first row's (a bfloat16 bank rounds the features, so it may differ).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from common import machine, markdown_table, run_worker
from torch import Tensor

from lightning_supcon.metrics import KNNAccuracy

SETTINGS = ((1, None), (2, None), (2, "bfloat16"))  # (processes, bank dtype)
BLOCK = 1024  # rows per generated block (and per update); shards are whole blocks, so every split has the same rows


def _status_mib(field: str) -> float:
    """A memory figure of this process from ``/proc/self/status`` (``VmRSS``: now, ``VmHWM``: peak), MiB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _reset_peak() -> None:
    """Start the peak (``VmHWM``) afresh at the current resident memory, so the imports' own peak is not counted."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _blocks(total: int, rank: int, world: int, dim: int, classes: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    """This rank's blocks of a synthetic clustered set of ``total`` rows (``seed`` 0: bank, 1: queries): class
    centres plus noise, each block from its own seed, so every split of the set into ranks holds the same rows.
    Blocks are generated at their final size (no large temporaries that would fragment the heap)."""
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(1234))
    num_blocks = -(-total // BLOCK)
    out = []
    for block in range(rank * num_blocks // world, (rank + 1) * num_blocks // world):
        rows = min(BLOCK, total - block * BLOCK)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + block + 1)
        labels = torch.randint(classes, (rows,), generator=gen)
        out.append((centers[labels] + 5.0 * torch.randn(rows, dim, generator=gen), labels))
    return out


def _rank(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    _reset_peak()
    baseline = _status_mib("VmRSS")
    metric = KNNAccuracy(args.classes, k=args.k, temperature=0.07, bank_dtype=args.bank_dtype)
    rows = 0
    for features, labels in _blocks(args.bank, rank, world, args.dim, args.classes, 0):  # as validation batches
        metric.update(features, labels, bank=True)
        rows += len(labels)
    queries = _blocks(args.queries, rank, world, args.dim, args.classes, 1)
    empty = torch.zeros(0, args.dim), torch.zeros(0, dtype=torch.long)  # a rank may get no whole query block
    metric.update(
        torch.cat([empty[0], *(q for q, _ in queries)]), torch.cat([empty[1], *(y for _, y in queries)]), bank=False
    )
    del queries
    if world > 1:
        dist.barrier()
    began = time.perf_counter()
    result = metric.compute()
    seconds = time.perf_counter() - began
    row = {"seconds": seconds, "peak": _status_mib("VmHWM"), "baseline": baseline, "rows": rows}
    row |= {name: value.item() for name, value in result.items()}
    Path(out, f"rank{rank}.json").write_text(json.dumps(row))
    if world > 1:
        dist.destroy_process_group()


def worker(args: argparse.Namespace) -> None:
    """Spawn ``args.worker`` ranks and print their results as one JSON line."""
    with tempfile.TemporaryDirectory() as out:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        mp.spawn(_rank, args=(args.worker, port, args, out), nprocs=args.worker, join=True)
        ranks = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(args.worker)]
    print(json.dumps({"ranks": ranks}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bank", type=int, default=200_000, help="bank entries (the training set)")
    parser.add_argument("--queries", type=int, default=10_000, help="queries (the validation set)")
    parser.add_argument("--dim", type=int, default=512, help="feature size")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per setting")
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--bank-dtype", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    sizes = ["--bank", str(args.bank), "--queries", str(args.queries), "--dim", str(args.dim)]
    sizes += ["--classes", str(args.classes), "--k", str(args.k)]
    print(f"kNN bank {args.bank:,} x {args.dim} float32, {args.queries:,} queries, k={args.k}, {args.classes} classes")
    print(f"machine: {machine()}, {os.cpu_count()} cores\n")
    header = ["processes, bank dtype", "bank rows per process", "compute (s)", "peak RSS per process (MiB)"]
    header += ["peak - imports (MiB)", "top-1 (%)", "same top-1/top-5 as row 1"]
    rows, first = [], None
    for processes, bank_dtype in SETTINGS:
        argv = [*sizes, "--worker", str(processes)] + (["--bank-dtype", bank_dtype] if bank_dtype else [])
        result = run_worker(__file__, argv, timeout=args.timeout)
        name = f"{processes}, {bank_dtype or 'float32'}"
        if isinstance(result, str):
            rows.append([name, "", result, "", "", "", ""])
            continue
        ranks: list[dict[str, Any]] = result["ranks"]
        metrics = {key: ranks[0][key] for key in ("top1", "top5") if key in ranks[0]}
        first = first or metrics
        rows.append(
            [
                name,
                " / ".join(f"{r['rows']:,}" for r in ranks),
                " / ".join(f"{r['seconds']:.1f}" for r in ranks),
                " / ".join(f"{r['peak']:,.0f}" for r in ranks),
                " / ".join(f"{r['peak'] - r['baseline']:,.0f}" for r in ranks),
                f"{100 * metrics['top1']:.2f}",
                "yes" if metrics == first and all(r["top1"] == ranks[0]["top1"] for r in ranks) else "no",
            ]
        )
    print(markdown_table(header, rows))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
