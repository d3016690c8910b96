"""Gradient caching (``SupConModule(micro_batch=...)``): peak memory and time of a step against the plain step, and
the largest batch that trains under a fixed memory limit.

    python benchmarks/gradient_cache.py                          # ResNet-18, 32 px, batch 256 x 2, micro-batch 32
    python benchmarks/gradient_cache.py --largest --limit-gib 1  # largest batch under 1 GiB above model and data
    python benchmarks/gradient_cache.py --device cuda            # on a GPU: torch.cuda.max_memory_allocated
    python benchmarks/gradient_cache.py --digits --batch 128 --micro-batch 16 --seeds 3   # accuracy, plain vs cached

Each arm runs in a fresh process (its own memory high-water mark): the real ``SupConModule.training_step``, its
backward and an SGD step on random images, one warm-up step, then ``--steps`` timed steps (median). Peak memory is
above the model and the data: on the CPU the growth of the peak resident set (``ru_maxrss``) over its value
before the first step, on a GPU ``max_memory_allocated`` minus the memory allocated before it. ``--largest`` caps
the process's address space at its size before the step plus ``--limit-gib`` (``RLIMIT_AS``), bisects the largest
plain batch that still trains, then tries the cached step at ``--factors`` times that batch. ``--digits`` trains
the small CNN on the digits with batch ``--batch`` plain and cached (``--micro-batch``) for each seed and prints the
validation kNN and probe top-1: the same within seed noise, not bit-equal, since the small CNN's BatchNorm
normalises each micro-batch by its own statistics. Arms run one after the other with the machine named; ratios are
from the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
import warnings

import torch
from common import digits_supcon, machine, markdown_table, run_worker

from lightning_supcon import OnlineEval, SupConModule


def _vm_size() -> int:
    """The process's virtual address space in bytes (``VmSize`` of ``/proc/self/status``)."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    return kib * 1024


def worker(args: argparse.Namespace) -> None:
    """One arm in this process: prints a JSON object with the median step time and the peak memory."""
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*self.log.*")  # the step runs without a Trainer
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = SupConModule(
        encoder=args.encoder,
        num_classes=10,
        micro_batch=args.micro_batch or None,
        online=OnlineEval(knn_k=0, probe=False),
    ).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(views: torch.Tensor, labels: torch.Tensor) -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model.training_step((views, labels), 0).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    size = args.image_size
    tiny = torch.randn(2, 2, 3, size, size, device=device)
    step(tiny, torch.arange(2, device=device))  # thread pools, optimiser state: not part of the step's peak
    views = torch.randn(args.batch, 2, 3, size, size, device=device)
    labels = torch.randint(0, 10, (args.batch,), device=device)
    if args.limit_gib:
        limit = _vm_size() + int(args.limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            step(views, labels)
        except (MemoryError, RuntimeError) as error:  # torch reports a failed allocation as a RuntimeError
            print(json.dumps({"fits": False, "error": str(error)[:80]}))
            return
        print(json.dumps({"fits": True}))
        return
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = [step(views, labels) for _ in range(args.steps + 1)][1:]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    print(json.dumps({"time": statistics.median(times), "times": times, "peak": peak}))


def _argv(args: argparse.Namespace, batch: int, micro_batch: int, limit_gib: float = 0.0) -> list[str]:
    return [
        "--worker",
        f"--batch={batch}",
        f"--micro-batch={micro_batch}",
        f"--limit-gib={limit_gib}",
        f"--encoder={args.encoder}",
        f"--image-size={args.image_size}",
        f"--steps={args.steps}",
        f"--threads={args.threads}",
        f"--device={args.device}",
    ]


def compare(args: argparse.Namespace) -> None:
    arms = {"plain step": 0, f"micro_batch {args.micro_batch}": args.micro_batch}
    results = {name: run_worker(__file__, _argv(args, args.batch, m), timeout=args.timeout) for name, m in arms.items()}
    plain = results["plain step"]
    rows = []
    for name, result in results.items():
        if isinstance(result, str):
            rows.append([name, result, "", "", ""])
            continue
        assert isinstance(plain, dict)
        rows.append(
            [
                name,
                f"{result['time']:.2f}",
                f"{result['time'] / plain['time']:.2f}x",
                f"{result['peak'] / 2**20:,.0f}",
                f"{result['peak'] / plain['peak']:.3f}",
            ]
        )
    header = ["arm", "time per step (s)", "vs plain", "peak memory above model + data (MiB)", "vs plain"]
    print(markdown_table(header, rows))


def largest(args: argparse.Namespace) -> None:
    def fits(batch: int, micro_batch: int) -> bool:
        result = run_worker(__file__, _argv(args, batch, micro_batch, args.limit_gib), timeout=args.timeout)
        print(f"  batch {batch}, micro_batch {micro_batch or 'off'}: {result}", flush=True)
        return isinstance(result, dict) and bool(result["fits"])

    low, high = 0, args.micro_batch  # the largest plain batch known to fit, and one known (or assumed) not to
    while fits(high, 0):
        low, high = high, 2 * high
    while high - low > max(1, low // 16):
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle, 0) else (low, middle)
    print(f"largest plain batch under {args.limit_gib} GiB above model and data: {low} (fails at {high})")
    for factor in (int(f) for f in args.factors.split(",")):
        batch = factor * max(low, 1)
        ok = fits(batch, args.micro_batch)
        print(f"cached, micro_batch {args.micro_batch}, batch {batch} ({factor}x): {'trains' if ok else 'fails'}")


def digits(args: argparse.Namespace) -> None:
    rows = []
    for name, micro_batch in (("plain", None), (f"micro_batch {args.micro_batch}", args.micro_batch)):
        runs = [digits_supcon(seed, args.batch, args.epochs, micro_batch=micro_batch) for seed in range(args.seeds)]
        knn, probe = [100 * r["knn"] for r in runs], [100 * r["probe"] for r in runs]
        seconds = [r["seconds"] for r in runs]
        rows.append(
            [
                f"batch {args.batch}, {name}",
                " / ".join(f"{v:.1f}" for v in knn) + f" (mean {statistics.mean(knn):.1f})",
                " / ".join(f"{v:.1f}" for v in probe) + f" (mean {statistics.mean(probe):.1f})",
                f"{statistics.median(seconds):.0f}",
            ]
        )
    header = ["setting", "val kNN top-1 (%) per seed", "val probe top-1 (%) per seed", "time per run (s)"]
    print(markdown_table(header, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--largest", action="store_true")
    parser.add_argument("--digits", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--factors", default="8,16", help="cached batches to try, as multiples of the plain one")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=32)
    parser.add_argument("--limit-gib", type=float, default=0.0)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    torch.set_num_threads(args.threads)
    what = "small CNN on the digits" if args.digits else f"{args.encoder}, {args.image_size} px"
    print(f"{what}, 2 views; machine: {machine(args.device)}")
    print(f"$ python benchmarks/gradient_cache.py {' '.join(sys.argv[1:])}\n")
    if args.digits:
        digits(args)
    elif args.largest:
        largest(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
