"""SupCon (L_out, L_in) + linear evaluation vs. SupCon + CE jointly vs. cross-entropy on the embedded digits, by seed.

    python benchmarks/digits_eval.py              # 3 seeds x 4 methods, 30 (+ 10 probe) epochs each
    python benchmarks/digits_eval.py --quick      # 1 seed, 2 (+ 1) epochs: a smoke run, under a minute
    python benchmarks/digits_eval.py --methods out joint ce   # only some methods (names below), same protocol

Runtime: 12 trainings on the CPU. On 2 AMD EPYC cores one SupCon run (30 + 10 epochs) took 155 s while the cores
were shared with other jobs (load 4), so budget about 25 min there, less on an idle or larger machine; under load 20,
with ``--methods out`` / ``joint`` / ``ce`` as three processes of ``--threads 1``, a run took about 11 min.

The protocol of [0] at toy scale, same encoder (the small CNN), augmentation, optimiser and epochs for every method:

- SupCon L_out (Eq. 2 of [0]) or L_in (Eq. 3) pretraining on 2 views per image, then a linear classifier on the frozen
  encoder (``LinearProbeModule``, one view per image);
- SupCon L_out and cross-entropy trained jointly (``SupConModule(ce_weight=1.0)``: a linear classifier on the
  encoder features, its gradient reaching the encoder, loss = SupCon + 1.0 x CE); rated by that classifier, and by
  the linear probe trained afterwards on the frozen encoder as for SupCon;
- cross-entropy end to end (``CrossEntropyModule``) on the same 2 views per image (each view a sample), so every
  method sees the same augmented images per step.

Top-1 is measured on the held-out split (the digits have no separate test set: test = val). Prints a markdown table
of mean +- std over seeds, the median wall time of one run of each method and the machine.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from common import machine, quiet_trainer

from lightning_supcon import DigitsDataModule, OnlineEval, SupConLoss, SupConModule
from lightning_supcon.encoder_files import save_encoder
from lightning_supcon.losses.functional import Summation
from lightning_supcon.models import LinearProbeModule, Schedule
from lightning_supcon.models.cross_entropy import CrossEntropyModule
from lightning_supcon.models.optimization import sgd

# The recipe of configs/digits.yaml (stage 1 and the cross-entropy baseline) and configs/digits_linear.yaml (probe).
RECIPE: dict[str, Any] = {"optimizer": sgd(lr=0.1, weight_decay=5e-4), "schedule": Schedule(warmup_epochs=2)}
PROBE_RECIPE: dict[str, Any] = {"optimizer": sgd(lr=0.5, weight_decay=0.0)}
BATCH, IMAGE_SIZE = 128, 16
METHODS = ("out", "in", "joint", "ce")
"""``out``/``in``: SupCon L_out/L_in + linear probe; ``joint``: SupCon + CE jointly; ``ce``: cross-entropy alone."""


def _top1(model: pl.LightningModule, root: str) -> float:
    data = DigitsDataModule(batch_size=BATCH, n_views=1, image_size=IMAGE_SIZE)
    metrics = quiet_trainer(1, root, validate=True).validate(model, datamodule=data, verbose=False)[0]
    return float(metrics["val/top1"])


def supcon_then_probe(summation: Summation, epochs: int, probe_epochs: int, root: str) -> float:
    """Stage 1 with ``summation`` ("out" or "in"), then the linear probe on the frozen encoder; val top-1."""
    model = SupConModule(
        encoder="small_cnn",
        in_channels=1,
        num_classes=10,
        loss=SupConLoss(summation=summation),
        **RECIPE,
        online=OnlineEval(probe=False, knn_k=0),
    )
    quiet_trainer(epochs, root).fit(model, datamodule=DigitsDataModule(batch_size=BATCH, n_views=2))
    encoder = save_encoder(model, Path(root) / f"encoder_{summation}.pt")
    probe = LinearProbeModule(
        str(encoder), encoder="small_cnn", in_channels=1, num_classes=10, retrieval=False, **PROBE_RECIPE
    )
    quiet_trainer(probe_epochs, root).fit(probe, datamodule=DigitsDataModule(batch_size=BATCH, n_views=1))
    return _top1(probe, root)


def joint(ce_weight: float, epochs: int, probe_epochs: int, root: str) -> tuple[float, float]:
    """SupCon L_out + ``ce_weight`` x CE trained jointly; val top-1 of the joint classifier, then of a linear probe
    trained on the frozen encoder (as for SupCon)."""
    model = SupConModule(
        encoder="small_cnn",
        in_channels=1,
        num_classes=10,
        ce_weight=ce_weight,
        **RECIPE,
        online=OnlineEval(probe=True, knn_k=0),
    )
    quiet_trainer(epochs, root).fit(model, datamodule=DigitsDataModule(batch_size=BATCH, n_views=2))
    data = DigitsDataModule(batch_size=BATCH, n_views=1, image_size=IMAGE_SIZE)
    metrics = quiet_trainer(1, root, validate=True).validate(model, datamodule=data, verbose=False)[0]
    head = float(metrics["val/probe_top1"])
    encoder = save_encoder(model, Path(root) / "encoder_joint.pt")
    probe = LinearProbeModule(
        str(encoder), encoder="small_cnn", in_channels=1, num_classes=10, retrieval=False, **PROBE_RECIPE
    )
    quiet_trainer(probe_epochs, root).fit(probe, datamodule=DigitsDataModule(batch_size=BATCH, n_views=1))
    return head, _top1(probe, root)


def cross_entropy(epochs: int, root: str) -> float:
    """The small CNN and a linear classifier trained end to end on the same 2 views per image; val top-1."""
    model = CrossEntropyModule(encoder="small_cnn", in_channels=1, num_classes=10, train_views="all", **RECIPE)
    quiet_trainer(epochs, root).fit(model, datamodule=DigitsDataModule(batch_size=BATCH, n_views=2))
    return _top1(model, root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of SupCon pretraining and of cross-entropy")
    parser.add_argument("--probe-epochs", type=int, default=10, help="epochs of the linear probe")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 + 1 epochs: check that everything runs")
    parser.add_argument("--ce-weight", type=float, default=1.0, help="weight of the CE in the joint method")
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to run (default: all)"
    )
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.probe_epochs = 1, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # no per-run banners between the results
    warnings.filterwarnings("ignore", module="pytorch_lightning")

    w = args.ce_weight
    everything: dict[str, Callable[[str], dict[str, float]]] = {
        "out": lambda root: {
            "SupCon L_out + linear probe": supcon_then_probe("out", args.epochs, args.probe_epochs, root)
        },
        "in": lambda root: {
            "SupCon L_in + linear probe": supcon_then_probe("in", args.epochs, args.probe_epochs, root)
        },
        "joint": lambda root: dict(
            zip(
                (f"SupCon + {w:g} x CE jointly: its classifier", f"SupCon + {w:g} x CE jointly, then linear probe"),
                joint(w, args.epochs, args.probe_epochs, root),
                strict=True,
            )
        ),
        "ce": lambda root: {"Cross-entropy (end to end)": cross_entropy(args.epochs, root)},
    }
    methods = {key: everything[key] for key in METHODS if key in args.methods}
    accuracy: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        for seed in range(args.seeds):
            for key, run in methods.items():
                pl.seed_everything(seed, verbose=False)
                tic = time.perf_counter()
                results = run(root)
                elapsed = time.perf_counter() - tic
                for name, value in results.items():
                    accuracy.setdefault(name, []).append(100.0 * value)
                    seconds.setdefault(name, []).append(elapsed)
                    print(f"seed {seed}  {name}: {100.0 * value:.2f}% (run of {key!r}: {elapsed:.0f} s)", flush=True)
    total = time.perf_counter() - start

    print(
        f"\nDigits (1,437 train / 360 val images, 16 px), small CNN, {args.epochs} epochs "
        f"(+ {args.probe_epochs} probe epochs), batch {BATCH}, {args.seeds} seed(s)\n"
    )
    print("| Method | val top-1 (%), mean ± std | wall time per run (median) |")
    print("|---|---|---|")
    for name in accuracy:
        values = accuracy[name]
        std = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"| {name} | {statistics.mean(values):.2f} ± {std:.2f} | {statistics.median(seconds[name]):.0f} s |")
    print(f"\nMachine: {machine()}. Total wall time: {total / 60:.1f} min.")


if __name__ == "__main__":
    main()
