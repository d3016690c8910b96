"""Forward+backward time and peak extra memory of SupCon loss implementations, side by side in one run.

    python benchmarks/loss.py                      # batch 2048 x 2 views, D=128, 7 runs each
    python benchmarks/loss.py --huge               # also: chunked mode at 32,768 x 2 views (N = 65,536)
    python benchmarks/loss.py --device cuda --batch 8192 --runs 5

Variants: this project's fused loss; a textbook dense-mask implementation of Eq. 2 (written here, shaped like the
widely used reference code); pytorch-metric-learning's SupConLoss (``pip install -e .[bench]``); and the
three-matmul bound (one (N x D)(D x N) product forward, two backward, and nothing else). Each variant runs in its
own process, so the peak resident memory it adds over its inputs can be read from ``ru_maxrss`` (on a GPU:
``torch.cuda.max_memory_allocated``, and the device is synchronised around every timing); times are medians.
Prints a markdown table with the machine.

A second table times this project's loss on the supervision variants of issue 17, side by side with class labels:
partial labels (half of them -1, unknown: a group of their own, still the fused path), the class-averaged
denominator (``denominator="class_mean"``, fused), and the two variants that take the explicit-mask path: a weighted
``mask`` and multi-hot labels (``multilabel="jaccard"``, 5 labels per sample out of 100).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from common import machine, synchronize
from torch import Tensor

VARIANTS = ("lightning_supcon", "textbook", "pytorch_metric_learning", "matmul_bound")
# Issue 17's supervision variants of this project's loss (the first is the plain-label baseline).
LOSS_VARIANTS = ("class labels", "partial labels (50% -1)", "class_mean denominator", "weighted mask", "multi-hot")
FUSED = ("class labels", "partial labels (50% -1)", "class_mean denominator")


def variant_inputs(variant: str, labels: Tensor) -> dict[str, Any]:
    """The loss options and ``forward`` inputs of one of ``LOSS_VARIANTS`` for class ``labels`` ``(B,)``."""
    gen = torch.Generator().manual_seed(1)
    batch = labels.shape[0]
    if variant == "partial labels (50% -1)":
        unknown = torch.rand(batch, generator=gen) < 0.5
        return {"labels": torch.where(unknown.to(labels.device), torch.full_like(labels, -1), labels)}
    if variant == "class_mean denominator":
        return {"labels": labels, "denominator": "class_mean"}
    if variant == "weighted mask":
        same = (labels[:, None] == labels[None, :]).float()
        return {"mask": same * torch.rand(batch, batch, generator=gen).to(labels.device)}
    if variant == "multi-hot":
        hot = torch.rand(batch, 100, generator=gen).argsort(dim=1)[:, :5]
        return {"labels": torch.zeros(batch, 100).scatter_(1, hot, 1.0).to(labels.device), "multilabel": "jaccard"}
    return {"labels": labels}


def textbook_supcon(features: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Eq. 2 with dense float masks, as most implementations write it."""
    views = features.shape[1]
    z = torch.cat(torch.unbind(features, dim=1), dim=0)  # (N, D), view-major
    y = labels.repeat(views)
    n = z.shape[0]
    logits = z @ z.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    not_self = 1.0 - torch.eye(n, device=features.device)
    positives = (y[:, None] == y[None, :]).float() * not_self
    exp_logits = torch.exp(logits) * not_self
    log_prob = logits - torch.log(exp_logits.sum(dim=1, keepdim=True))
    mean_log_prob_pos = (positives * log_prob).sum(dim=1) / positives.sum(dim=1)
    return -mean_log_prob_pos.mean()


def _make_step(variant: str, features: Tensor, labels: Tensor, chunk_size: int | None) -> Callable[[], float]:
    temperature = 0.1
    if variant == "lightning_supcon":
        from lightning_supcon import SupConLoss

        loss_fn = SupConLoss(temperature=temperature, chunk_size=chunk_size)

        def step() -> float:
            feats = features.detach().requires_grad_()
            loss = loss_fn(feats, labels)
            loss.backward()
            return float(loss)

    elif variant == "textbook":

        def step() -> float:
            feats = features.detach().requires_grad_()
            loss = textbook_supcon(feats, labels, temperature)
            loss.backward()
            return float(loss)

    elif variant == "pytorch_metric_learning":
        from pytorch_metric_learning.losses import SupConLoss as PMLSupConLoss

        pml = PMLSupConLoss(temperature=temperature)
        views = features.shape[1]

        def step() -> float:
            feats = features.detach().requires_grad_()
            loss = pml(torch.cat(torch.unbind(feats, dim=1)), labels.repeat(views))
            loss.backward()
            return float(loss)

    elif variant in LOSS_VARIANTS:
        from lightning_supcon import SupConLoss

        inputs = variant_inputs(variant, labels)
        options = {k: inputs.pop(k) for k in ("denominator", "multilabel") if k in inputs}
        variant_fn = SupConLoss(temperature=temperature, chunk_size=chunk_size, **options)

        def step() -> float:
            feats = features.detach().requires_grad_()
            loss = variant_fn(feats, **inputs)
            loss.backward()
            return float(loss)

    elif variant == "matmul_bound":
        z = features.transpose(0, 1).reshape(-1, features.shape[-1]).contiguous()

        def step() -> float:
            s = z @ z.T  # forward: logits
            a = s @ z  # backward: grad wrt anchors
            b = s.T @ z  # backward: grad wrt contrast
            return float(a[0, 0] + b[0, 0])

    else:
        raise ValueError(f"Expected a variant in {VARIANTS}, but got {variant!r}")
    return step


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(
    variant: str, batch: int, views: int, dim: int, runs: int, chunk_size: int | None, device: torch.device
) -> dict:
    torch.manual_seed(0)
    features = F.normalize(torch.randn(batch, views, dim), dim=-1).to(device)
    labels = torch.randint(0, 100, (batch,)).to(device)
    step = _make_step(variant, features, labels, chunk_size)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _peak_bytes(device)
    value = step()  # warm-up; reaches the peak
    synchronize(device)
    peak_extra = _peak_bytes(device) - before
    times, cpu_times = [], []
    for _ in range(runs):
        synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return {
        "variant": variant,
        "value": value,
        "median_s": statistics.median(times),
        "median_cpu_s": statistics.median(cpu_times),
        "peak_extra_bytes": peak_extra,
    }


def interleaved_worker(
    batch: int, views: int, dim: int, runs: int, chunk_size: int | None, device: torch.device
) -> dict:
    """Times of every ``LOSS_VARIANTS`` entry in one process, round-robin (each round runs every variant once), so
    that a shared machine's changing load weighs on all of them alike; medians of wall and CPU time."""
    torch.manual_seed(0)
    features = F.normalize(torch.randn(batch, views, dim), dim=-1).to(device)
    labels = torch.randint(0, 100, (batch,)).to(device)
    steps = {v: _make_step(v, features, labels, chunk_size) for v in LOSS_VARIANTS}
    values = {v: step() for v, step in steps.items()}  # warm-up
    wall: dict[str, list[float]] = {v: [] for v in steps}
    cpu: dict[str, list[float]] = {v: [] for v in steps}
    for _ in range(runs):
        for v, step in steps.items():
            synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            synchronize(device)
            wall[v].append(time.perf_counter() - start)
            cpu[v].append(time.process_time() - cpu_start)
    return {
        v: {"value": values[v], "median_s": statistics.median(wall[v]), "median_cpu_s": statistics.median(cpu[v])}
        for v in steps
    }


def run_in_subprocess(variant: str, args: argparse.Namespace, batch: int, runs: int, chunk: int | None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        variant,
        "--batch",
        str(batch),
        "--views",
        str(args.views),
        "--dim",
        str(args.dim),
        "--runs",
        str(runs),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    ]
    if chunk is not None:
        cmd += ["--chunk-size", str(chunk)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--huge", action="store_true", help="also run the chunked loss at 32,768 x 2 views")
    parser.add_argument("--no-variants", action="store_true", help="skip the table of supervision variants")
    parser.add_argument("--variants-only", action="store_true", help="only the table of supervision variants")
    parser.add_argument("--worker", choices=(*VARIANTS, *LOSS_VARIANTS, "interleaved"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        device = torch.device(args.device)
        if args.worker == "interleaved":
            result = interleaved_worker(args.batch, args.views, args.dim, args.runs, args.chunk_size, device)
        else:
            result = worker(args.worker, args.batch, args.views, args.dim, args.runs, args.chunk_size, device)
        print(json.dumps(result))
        return

    n = args.batch * args.views
    n2_bytes = n * n * 4
    print(f"SupCon loss forward+backward, batch {args.batch} x {args.views} views (N={n}), D={args.dim}")
    print(f"machine: {machine(args.device)}; median of {args.runs} runs, each variant in its own process\n")
    if not args.variants_only:
        results = {v: run_in_subprocess(v, args, args.batch, args.runs, args.chunk_size) for v in VARIANTS}
        ours = results["lightning_supcon"]
        print("| implementation | time (ms) | ours is faster by | peak extra memory (N² floats) | loss |")
        print("|---|---:|---:|---:|---:|")
        for variant, r in results.items():
            ratio = r["median_s"] / ours["median_s"]
            value = "" if variant == "matmul_bound" else f"{r['value']:.4f}"
            print(
                f"| {variant} | {1000 * r['median_s']:.1f} | {ratio:.2f}x | {r['peak_extra_bytes'] / n2_bytes:.2f} "
                f"| {value} |"
            )
        bound = results["matmul_bound"]["median_s"]
        print(f"\nours / three-matmul bound: {ours['median_s'] / bound:.2f}x")

    if not args.no_variants:
        print(
            f"\nSupervision variants of this project's loss, same batch: times from one process running the variants"
            f" round-robin ({args.runs} rounds, medians); peak memory from one run of each in its own process\n"
        )
        timed = run_in_subprocess("interleaved", args, args.batch, args.runs, args.chunk_size)
        memory = {v: run_in_subprocess(v, args, args.batch, 1, args.chunk_size) for v in LOSS_VARIANTS}
        plain = timed["class labels"]
        print(
            "| supervision | path | time (ms) | time / class labels | CPU time / class labels "
            "| peak extra memory (N² floats) | loss |"
        )
        print("|---|---|---:|---:|---:|---:|---:|")
        for variant, r in timed.items():
            path = "fused" if variant in FUSED else "explicit masks"
            print(
                f"| {variant} | {path} | {1000 * r['median_s']:.1f} | {r['median_s'] / plain['median_s']:.2f}x "
                f"| {r['median_cpu_s'] / plain['median_cpu_s']:.2f}x "
                f"| {memory[variant]['peak_extra_bytes'] / n2_bytes:.2f} | {r['value']:.4f} |"
            )
        print("(CPU time: the process's own, summed over its threads; steadier than wall time on a shared machine.)")

    if args.huge:
        batch, chunk = 32768, 4096
        big_n = batch * args.views
        print(f"\nChunked mode: batch {batch} x {args.views} views (N={big_n}), D={args.dim}, chunk_size={chunk}")
        r = run_in_subprocess("lightning_supcon", args, batch, 1, chunk)
        print(
            f"forward+backward {r['median_s']:.1f} s, peak extra memory {r['peak_extra_bytes'] / 2**30:.2f} GiB "
            f"(a dense N x N float matrix is {big_n * big_n * 4 / 2**30:.0f} GiB), loss {r['value']:.4f}"
        )


if __name__ == "__main__":
    main()
