"""Images per second of a SupCon training step, end to end, four pipelines side by side in one run.

    python benchmarks/throughput.py                          # ResNet-18 (CIFAR stem), 32 px, batch 256 x 2 views
    python benchmarks/throughput.py --device cuda --num-workers 8
    python benchmarks/throughput.py --encoder small_cnn --batch 8 --steps 2 --image-size 16   # a smoke run

Pipelines, over the same synthetic in-memory images (uint8 RGB, random labels; no download):

- (a) reference: shaped like the widely used reference code: a torchvision ``Dataset`` of PIL images, two views
  made per sample by torchvision transforms in the DataLoader workers, a textbook dense-mask loss
  (``textbook_supcon`` of ``benchmarks/loss.py``) and SGD, in a plain PyTorch loop;
- (b) lightning_supcon: ``SupConModule`` (fused loss) trained by the Lightning ``Trainer`` on a
  ``MultiViewDataModule`` with ``augment_on="device"``: the workers only decode, the views are made batched by
  kornia after the batch reaches the device;
- (c) the computation of (b) (same batched augmentation, ``training_step``, optimiser and schedule) in a plain
  PyTorch loop: (b) against (c) is the Trainer's own overhead;
- (d) (b) with the project's speed options, ``precision="bf16-mixed"`` and ``channels_last=True`` (the loss
  still computes in float32): (a), (b) and (c) all train in float32, (d) does not.

All four train the same network (the project's encoder and projection head) with SGD; the project's online probe
and kNN are off. An image is one sample of the batch (it gives ``--views`` views). Each pipeline runs in its own
process; after ``--warmup`` untimed steps it is timed over ``--windows`` windows of ``--steps`` steps, and the
table shows the median window with the range. ``--repeats`` runs the four in turn several times and pools the
windows (for a noisy machine). Prints a markdown table with the machine.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torchvision.transforms as T
from common import (
    NUM_CLASSES,
    WindowTimer,
    add_setup_args,
    machine,
    markdown_table,
    rate_text,
    run_worker,
    setup_argv,
    summary,
    synthetic_images,
)
from loss import textbook_supcon
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.datasets import VisionDataset

from lightning_supcon import OnlineEval
from lightning_supcon.data import MultiViewDataModule
from lightning_supcon.data.base import Split
from lightning_supcon.data.cifar import ArrayImageDataset
from lightning_supcon.data.transforms import CIFAR10_MEAN, CIFAR10_STD
from lightning_supcon.models.optimization import decay_groups
from lightning_supcon.models.supcon_module import SupConModule
from lightning_supcon.nets import ProjectionHead, build_encoder, encoder_feature_dim
from lightning_supcon.optim import warmup_cosine

VARIANTS = ("reference", "lightning", "plain", "fast")
LABELS = {
    "reference": "(a) reference: PIL views in workers, textbook loss, plain loop",
    "lightning": "(b) lightning_supcon + Trainer: device views, fused loss",
    "plain": "(c) (b) without the Trainer: plain loop",
    "fast": "(d) (b) + bf16-mixed + channels_last",
}
TEMPERATURE = 0.1
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 1e-4


def make_encoder(name: str, stem: str) -> nn.Module:
    """A built-in encoder by name; ResNets get ``stem`` (``"cifar"`` for 32 px, ``"imagenet"`` for 224 px)."""
    kwargs: dict[str, Any] = {"stem": stem} if name.startswith("resnet") else {}
    return build_encoder(name, in_channels=3, **kwargs)[0]


def forever(loader: DataLoader) -> Iterator[Any]:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


# ---- (a) the reference pipeline ---------------------------------------------------------------------------------
class InMemoryImages(VisionDataset):
    """``(transform(PIL image), label)`` from a uint8 ``(N, H, W, 3)`` array, as torchvision's CIFAR10 serves."""

    def __init__(self, images: np.ndarray, labels: list[int], transform: Any) -> None:
        super().__init__(root="", transform=transform)
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]  # type: ignore[misc]


class RepeatTransform:
    """``n_views`` independent draws of a random transform of one image, as a list."""

    def __init__(self, transform: Any, n_views: int) -> None:
        self.transform, self.n_views = transform, n_views

    def __call__(self, image: Image.Image) -> list[Tensor]:
        return [self.transform(image) for _ in range(self.n_views)]


def reference_transform(size: int) -> T.Compose:
    """The SupCon/SimCLR per-sample recipe in torchvision's classic transforms API."""
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.2, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.ToTensor(),
            T.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        ]
    )


def reference_rates(args: argparse.Namespace) -> list[float]:
    """(a): per-sample PIL views in the workers, textbook loss, plain loop."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    images, labels = synthetic_images(args.num_images, args.image_size)
    transform = RepeatTransform(reference_transform(args.image_size), args.views)
    loader: DataLoader[Any] = DataLoader(
        InMemoryImages(images, labels, transform),
        batch_size=args.batch,
        shuffle=True,
        drop_last=True,
        num_workers=args.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.num_workers > 0,  # kind to (a): no worker restart at each (short) epoch
    )
    encoder = make_encoder(args.encoder, args.stem)
    head = ProjectionHead(encoder_feature_dim(encoder), 128)
    model = nn.Sequential(encoder, head).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    timer = WindowTimer(args.warmup, args.steps, args.windows, args.batch, device)
    model.train()
    for views, targets in forever(loader):
        batch = targets.shape[0]
        x = torch.cat(views, dim=0).to(device, non_blocking=True)  # (V * B, C, H, W), view-major
        targets = targets.to(device, non_blocking=True)
        projections = model(x)
        features = torch.stack(projections.split(batch), dim=1)  # (B, V, D)
        loss = textbook_supcon(features, targets, TEMPERATURE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        timer.step()
        if timer.done:
            break
    return timer.rates()


# ---- (b) this project through the Trainer -----------------------------------------------------------------------
class SyntheticDataModule(MultiViewDataModule):
    """The project's data path over synthetic in-memory images, read like :class:`CIFAR10DataModule` reads CIFAR
    (uint8 array to PIL image in the loader workers)."""

    num_classes = NUM_CLASSES
    mean, std = CIFAR10_MEAN, CIFAR10_STD

    def __init__(self, num_images: int, image_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image_size = image_size
        self.images, self.labels = synthetic_images(num_images, image_size)

    def dataset(self, split: Split) -> ArrayImageDataset | None:
        return ArrayImageDataset(self.images, self.labels) if split in ("train", "val") else None


def project_setup(
    args: argparse.Namespace, channels_last: bool = False, compile_encoder: bool = False
) -> tuple[SyntheticDataModule, SupConModule]:
    """The project's setup: device-side batched augmentation, ``SupConModule`` with the fused loss and SGD; no
    online probe or kNN (the reference loop has neither)."""
    torch.manual_seed(0)
    datamodule = SyntheticDataModule(
        args.num_images,
        args.image_size,
        batch_size=args.batch,
        n_views=args.views,
        num_workers=args.num_workers,
        augment_on="device",
        pin_memory=args.device.startswith("cuda"),
    )
    module = SupConModule(
        encoder=make_encoder(args.encoder, args.stem),
        num_classes=NUM_CLASSES,
        channels_last=channels_last,
        compile_encoder=compile_encoder,
        online=OnlineEval(probe=False, knn_k=0),
    )
    return datamodule, module


class _TimerCallback(pl.Callback):
    def __init__(self, timer: WindowTimer) -> None:
        self.timer = timer

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.timer.step()


def trainer_rates(
    args: argparse.Namespace, precision: str = "32-true", channels_last: bool = False, compile_encoder: bool = False
) -> list[float]:
    """Images per second of each timed window of :func:`project_setup` trained by a Lightning ``Trainer``.

    The Trainer is set up for measuring: no logger, checkpoints, progress bar, model summary or validation.
    """
    datamodule, module = project_setup(args, channels_last=channels_last, compile_encoder=compile_encoder)
    device = torch.device(args.device)
    timer = WindowTimer(args.warmup, args.steps, args.windows, args.batch, device)
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=precision,  # type: ignore[arg-type]
        max_steps=timer.total_steps,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        benchmark=device.type == "cuda",
        callbacks=[_TimerCallback(timer)],
    )
    trainer.fit(module, datamodule=datamodule)
    return timer.rates()


# ---- (c) the computation of (b) without the Trainer -------------------------------------------------------------
def plain_rates(args: argparse.Namespace) -> list[float]:
    """(c): the data, augmentation, ``training_step``, optimiser and schedule of (b), without the Trainer."""
    device = torch.device(args.device)
    datamodule, module = project_setup(args)
    module.to(device).train()
    augment = datamodule.device_augment().to(device)
    optimizer = module.optimizer(decay_groups(module.optimized_parameters()))
    timer = WindowTimer(args.warmup, args.steps, args.windows, args.batch, device)
    scheduler = warmup_cosine(optimizer, 0, timer.total_steps, min_lr_ratio=module.schedule.min_lr_ratio)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    for step, (images, labels) in enumerate(forever(datamodule.train_dataloader())):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        loss = module.training_step((augment(images), labels), step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        timer.step()
        if timer.done:
            break
    return timer.rates()


def worker(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    if variant == "reference":
        rates = reference_rates(args)
    elif variant == "lightning":
        rates = trainer_rates(args)
    elif variant == "plain":
        rates = plain_rates(args)
    elif variant == "fast":
        rates = trainer_rates(args, precision="bf16-mixed", channels_last=True)
    else:
        raise ValueError(f"Expected a variant in {VARIANTS}, but got {variant!r}")
    return {"variant": variant, "rates": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setup_args(parser)
    parser.add_argument("--repeats", type=int, default=1, help="run the four pipelines in turn this many times")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed to each worker process")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        warnings.filterwarnings("ignore", message=".*self.log.*")  # (c) calls `training_step` with no Trainer
        print(json.dumps(worker(args.worker, args)))
        return

    print(
        f"SupCon training throughput: {args.encoder} ({args.stem} stem), {args.image_size} px, batch {args.batch} x "
        f"{args.views} views, {args.num_workers} loader workers, device {args.device}"
    )
    print(
        f"machine: {machine(args.device)}; {args.warmup} warm-up steps, then {args.windows} windows of {args.steps} "
        f"steps x {args.repeats} repeat(s); each pipeline in its own process\n",
        flush=True,
    )
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    failures: dict[str, str] = {}
    for _ in range(args.repeats):
        for variant in VARIANTS:
            result = run_worker(__file__, ["--worker", variant, *setup_argv(args)], timeout=args.timeout)
            if isinstance(result, str):
                failures[variant] = result
            else:
                rates[variant] += result["rates"]
    medians = {v: summary(r)[0] for v, r in rates.items() if r and v not in failures}
    rows = []
    for variant in VARIANTS:
        if variant not in medians:
            rows.append([LABELS[variant], failures.get(variant, "failed"), "", ""])
            continue
        median, spread = summary(rates[variant])
        ratio = f"{median / medians['reference']:.2f}x" if "reference" in medians else ""
        rows.append([LABELS[variant], rate_text(median), spread, ratio])
    print(markdown_table(["pipeline", "images/s (median)", "range over windows", "vs (a)"], rows))
    if "lightning" in medians and "plain" in medians:
        overhead = 100 * (medians["plain"] / medians["lightning"] - 1)
        print(f"\nLightning Trainer overhead, time per step of (b) over (c): {overhead:+.1f}% (goal: <= 3%)")


if __name__ == "__main__":
    main()
