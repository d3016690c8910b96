"""Helpers shared by the benchmarks: the machine's name, synthetic images, timed windows, the options of the
training setup, worker processes and markdown tables. Light on imports (torch and numpy only).

The scripts run as ``python benchmarks/<name>.py`` from any directory: Python puts ``benchmarks/`` first on the
module path, so they import this file as ``common``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

NUM_CLASSES = 10


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine(device: str = "cpu") -> str:
    """The CPU model, torch's thread count and version; and the GPU's name when ``device`` is a CUDA device."""
    text = f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    if device.startswith("cuda") and torch.cuda.is_available():
        text = f"{torch.cuda.get_device_name(torch.device(device))} (CUDA {torch.version.cuda}); host: {text}"
    return text


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that wall-clock times include it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_images(count: int, size: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """``count`` random uint8 RGB images ``(count, size, size, 3)``, as CIFAR holds them, and random labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, size=count).tolist()
    return images, labels


class WindowTimer:
    """Images per second over ``windows`` windows of ``steps`` training steps each, after ``warmup`` steps.

    Call :meth:`step` after every training step; it synchronises the device and reads the clock only at window
    boundaries, so an accelerator can run ahead inside a window as in real training. The first window starts at
    the end of the last warm-up step (at least one: the first step pays one-off costs).
    """

    def __init__(self, warmup: int, steps: int, windows: int, images_per_step: int, device: torch.device) -> None:
        for name, value, low in (("warmup", warmup, 1), ("steps", steps, 1), ("windows", windows, 1)):
            if value < low:
                raise ValueError(f"Expected `{name}` >= {low}, but got {value}.")
        self.warmup, self.steps, self.windows = warmup, steps, windows
        self.images_per_step = images_per_step
        self.device = device
        self.count = 0
        self.stamps: list[float] = []

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps * self.windows

    @property
    def done(self) -> bool:
        return self.count >= self.total_steps

    def step(self) -> None:
        self.count += 1
        if self.count >= self.warmup and (self.count - self.warmup) % self.steps == 0:
            self._stamp()

    def _stamp(self) -> None:
        synchronize(self.device)
        self.stamps.append(time.perf_counter())

    def rates(self) -> list[float]:
        """Images per second of each finished window."""
        spans = [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]
        return [self.steps * self.images_per_step / span for span in spans]


def add_setup_args(parser: argparse.ArgumentParser, batch: int = 256) -> None:
    """The options of the training setup of ``throughput.py``, which ``options.py`` shares."""
    parser.add_argument("--batch", type=int, default=batch, help="images per step (each gives --views views)")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--encoder", default="resnet18", help="small_cnn, resnet18, resnet34, resnet50, resnet101")
    parser.add_argument("--stem", choices=("cifar", "imagenet"), default="cifar", help="stem of the ResNets")
    parser.add_argument("--image-size", type=int, default=32, help="side of the stored images and of the views")
    parser.add_argument("--num-images", type=int, default=2048, help="synthetic images held in memory")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training process")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=1, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=5, help="timed windows; the table shows their median")


def setup_argv(args: argparse.Namespace) -> list[str]:
    """The command-line form of :func:`add_setup_args`'s options, to hand them to a worker process."""
    names = ["batch", "views", "encoder", "stem", "image_size", "num_images", "num_workers", "threads", "device"]
    names += ["warmup", "steps", "windows"]
    argv: list[str] = []
    for name in names:
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return argv


def run_worker(script: str, argv: list[str], timeout: float | None = None) -> dict[str, Any] | str:
    """Run ``python script *argv`` and return the JSON object it prints last, or ``"failed: <reason>"``."""
    try:
        proc = subprocess.run(
            [sys.executable, script, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return f"failed: timed out after {timeout:.0f} s"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        errors = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        reason = errors[-1] if errors else f"exit code {proc.returncode}"
        return f"failed: {reason[:200]}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def rate_text(rate: float) -> str:
    """An images-per-second figure for a table: whole numbers from 100 up, three significant digits below."""
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"


def summary(rates: list[float]) -> tuple[float, str]:
    """The median of window rates and their range as text."""
    return statistics.median(rates), f"{rate_text(min(rates))}-{rate_text(max(rates))}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table, every column but the first right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def quiet_trainer(epochs: int, root: str | None = None, validate: bool = False, **options: Any) -> Any:
    """A one-CPU Lightning ``Trainer`` for the accuracy benchmarks: no logger, checkpoints, progress bar, summary
    or sanity check; validation only with ``validate`` (Lightning is imported here, not at this module's import)."""
    import pytorch_lightning as pl

    settings: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": epochs,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "limit_val_batches": None if validate else 0,
        "num_sanity_val_steps": 0,
        "default_root_dir": root,
    }
    return pl.Trainer(**(settings | options))


def digits_supcon(seed: int, batch: int, epochs: int, **options: Any) -> dict[str, float]:
    """One SupCon run on the digits with the small CNN and the recipe the queue and gradient-caching benchmarks
    share (SGD lr 0.05, weight decay 1e-4, one warmup epoch, device augmentation), validated once at the end.

    Args:
        options: More ``SupConModule`` arguments, e.g. ``queue=Queue(size=1024)`` or ``micro_batch=16``.

    Returns:
        ``{"knn", "probe"}`` validation top-1 (fractions) and ``"seconds"`` of the fit.
    """
    import pytorch_lightning as pl

    from lightning_supcon import DigitsDataModule, Schedule, SupConModule
    from lightning_supcon.models.optimization import sgd

    pl.seed_everything(seed, verbose=False)
    model = SupConModule(
        encoder="small_cnn",
        in_channels=1,
        num_classes=10,
        optimizer=sgd(lr=0.05, weight_decay=1e-4),
        schedule=Schedule(warmup_epochs=1),
        **options,
    )
    trainer = quiet_trainer(epochs, validate=True, check_val_every_n_epoch=epochs)
    start = time.perf_counter()
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=batch, augment_on="device"))
    metrics = trainer.callback_metrics
    seconds = time.perf_counter() - start
    return {"knn": metrics["val/knn_top1"].item(), "probe": metrics["val/probe_top1"].item(), "seconds": seconds}
