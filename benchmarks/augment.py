"""Augmented views per second at 32 px: per-sample torchvision (PIL) vs batched kornia, side by side in one run.

    python benchmarks/augment.py                    # 256 images x 2 views, 1 thread, 7 runs each
    python benchmarks/augment.py --threads 2 --batch 512
    python benchmarks/augment.py --device cuda      # the batched path on a GPU (the per-sample one stays on CPU)

Paths, both built from one recipe, ``SIMCLR`` (SupCon's CIFAR recipe: crop scale (0.2, 1), flip, colour jitter
p=0.8, grayscale p=0.2):

- ``per-sample``: what ``augment_on="cpu"`` does in a loader worker: ``MultiViewTransform(supcon_transform(...), 2)``
  on each PIL image, then the batch is stacked.
- ``batched``: what ``augment_on="device"`` does after the transfer: ``DeviceMultiViewAugment`` on a uint8 batch.
- ``batched + decode``: the same plus the loader's per-sample PIL -> uint8 tensor conversion and stacking, i.e. the
  whole CPU cost when the device is the CPU.

The images are random 32x32 RGB (the cost of these steps hardly depends on content). Runs of the paths alternate,
so a change of machine load hits all of them; the table gives medians and the ratio to ``per-sample``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torchvision
from common import cpu_model
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2

from lightning_supcon.data import SIMCLR, DeviceMultiViewAugment, MultiViewTransform, supcon_transform
from lightning_supcon.data.transforms import CIFAR10_MEAN, CIFAR10_STD

SIZE = 32


def make_paths(batch: int, views: int, device: torch.device) -> dict[str, Callable[[], Tensor]]:
    """The three paths, each a function returning ``(batch, views, 3, 32, 32)`` views of the same images."""
    rng = np.random.default_rng(0)
    pil_images = [Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)) for _ in range(batch)]
    per_sample = MultiViewTransform(supcon_transform(SIZE, CIFAR10_MEAN, CIFAR10_STD, SIMCLR), views)
    decode = v2.Compose([v2.ToImage(), v2.ToDtype(torch.uint8), v2.ToPureTensor()])
    uint8_batch = torch.stack([decode(image) for image in pil_images]).to(device)
    augment = DeviceMultiViewAugment(SIZE, CIFAR10_MEAN, CIFAR10_STD, n_views=views, recipe=SIMCLR).to(device)

    def sync(out: Tensor) -> Tensor:
        if out.is_cuda:
            torch.cuda.synchronize()
        return out

    return {
        "per-sample (torchvision, PIL)": lambda: torch.stack([per_sample(image) for image in pil_images]),
        "batched (kornia)": lambda: sync(augment(uint8_batch)),
        "batched + decode": lambda: sync(augment(torch.stack([decode(image) for image in pil_images]).to(device))),
    }


def measure(paths: dict[str, Callable[[], Tensor]], runs: int) -> dict[str, list[float]]:
    """Seconds per call of each path, ``runs`` times, the paths alternating; one untimed warm-up each."""
    for fn in paths.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(runs):
        for name, fn in paths.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256, help="images per call")
    parser.add_argument("--views", type=int, default=2, help="views per image")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per path (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, the same for all paths")
    parser.add_argument("--device", default="cpu", help="device of the batched paths")
    args = parser.parse_args()
    if args.runs < 5:
        parser.error(f"--runs must be >= 5 for a meaningful median, got {args.runs}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    times = measure(make_paths(args.batch, args.views, device), args.runs)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(
        f"Machine: {cpu_model()}, {os.cpu_count()} cores (torch threads: {args.threads}){gpu}; "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"kornia {__import__('kornia').__version__}; 1-min load average {load:.2f}."
    )
    print(f"{args.batch} images of {SIZE}x{SIZE} x {args.views} views per call, medians of {args.runs} runs.\n")
    print("| path | device | views/s (median) | range over runs | ratio to per-sample |")
    print("|---|---|---:|---:|---:|")
    n_views = args.batch * args.views
    baseline = statistics.median(times["per-sample (torchvision, PIL)"])
    for name, seconds in times.items():
        where = "cpu" if name.startswith("per-sample") else str(device)
        median = statistics.median(seconds)
        low, high = n_views / max(seconds), n_views / min(seconds)
        print(f"| {name} | {where} | {n_views / median:,.0f} | {low:,.0f}-{high:,.0f} | {baseline / median:.1f}x |")


if __name__ == "__main__":
    main()
