"""Long-tailed digits: SupCon L_out vs the class-averaged denominator of BCL, balanced accuracy after the linear stage.

    python benchmarks/long_tail.py                  # imbalance 10 and 100, 3 seeds, 2 losses: 12 runs
    python benchmarks/long_tail.py --quick          # imbalance 10, 1 seed, 2 + 1 epochs: a smoke run

The training split of the digits (1,437 images, about 144 per class) is cut to a long tail as in the CIFAR-LT
protocol [1]: class ``c`` keeps ``n_max * ratio ** (-c / 9)`` images (at least one), drawn with the seed, so class
0 keeps all its images and class 9 ``1 / ratio`` of them (ratio 10: 586 images; ratio 100: 354). The validation
split (360 images) stays balanced. For each seed and loss: SupCon pretraining on 2 views per image
(``SupConLoss(denominator="all")``, Eq. 2 of [0], or ``denominator="class_mean"``, the class-averaging of [1]),
then a linear classifier on the frozen encoder trained on the same long-tailed split (``LinearProbeModule``, one view
per image). Reported: balanced accuracy (the mean of the per-class recalls, ``sklearn.metrics
.balanced_accuracy_score``) on the validation split, and the accuracy on the three rarest classes (7, 8, 9).

Same encoder (the small CNN), augmentation, optimiser, batch and epochs for both losses (the recipe of
``configs/digits.yaml``). Prints a markdown table of mean +- std over seeds, the per-seed values and the machine.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [1] Zhu et al., Balanced Contrastive Learning for Long-Tailed Visual Recognition, CVPR 2022,
  https://arxiv.org/abs/2207.09052 (class-averaging; the long-tail protocol of Cao et al., LDAM, NeurIPS 2019)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from common import machine, quiet_trainer
from sklearn.metrics import balanced_accuracy_score

from lightning_supcon import DigitsDataModule, OnlineEval, SupConLoss, SupConModule
from lightning_supcon.encoder_files import save_encoder
from lightning_supcon.losses.options import Denominator
from lightning_supcon.models import LinearProbeModule, Schedule
from lightning_supcon.models.optimization import sgd

RECIPE: dict[str, Any] = {"optimizer": sgd(lr=0.1, weight_decay=5e-4), "schedule": Schedule(warmup_epochs=2)}
PROBE_RECIPE: dict[str, Any] = {"optimizer": sgd(lr=0.5, weight_decay=0.0)}
BATCH = 128
RARE = (7, 8, 9)
LOSSES: dict[str, Denominator] = {"SupCon L_out": "all", "L_out, class-averaged denominator (BCL)": "class_mean"}


def long_tail_counts(counts: list[int], ratio: float) -> list[int]:
    """Images kept per class: ``n_max * ratio ** (-c / (C - 1))``, at least 1, at most what the class has."""
    n_max, last = max(counts), len(counts) - 1
    return [max(1, min(n, int(n_max * ratio ** (-c / last)))) for c, n in enumerate(counts)]


class LongTailDigits(DigitsDataModule):
    """The digits with a long-tailed training split (``ratio`` = largest / smallest class), drawn with ``seed``."""

    def __init__(self, ratio: float, seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        labels = torch.as_tensor(self._train.labels)
        gen = torch.Generator().manual_seed(seed)
        counts = torch.bincount(labels, minlength=self.num_classes).tolist()
        keep = []
        for c, n in enumerate(long_tail_counts(counts, ratio)):
            members = (labels == c).nonzero().squeeze(1)
            keep.append(members[torch.randperm(len(members), generator=gen)[:n]])
        index = torch.cat(keep).sort().values
        self._train = self._train.subset(index.numpy())  # the samples with their own labels


@torch.no_grad()
def _scores(probe: LinearProbeModule, data: DigitsDataModule) -> tuple[float, float]:
    """Balanced accuracy and the accuracy on the rare classes, on the (balanced) validation split."""
    probe.eval()
    batches = list(data.test_dataloader())  # the clean (normalised) validation split
    predictions = torch.cat([probe(images).argmax(dim=1) for images, _ in batches])
    labels = torch.cat([labels for _, labels in batches])
    rare = torch.isin(labels, torch.tensor(RARE))
    rare_accuracy = (predictions[rare] == labels[rare]).float().mean().item()
    return float(balanced_accuracy_score(labels.numpy(), predictions.numpy())), rare_accuracy


def run(
    denominator: Denominator, ratio: float, seed: int, epochs: int, probe_epochs: int, root: str
) -> tuple[float, float]:
    """Stage 1 with the given denominator on the long-tailed split, then the linear probe; validation scores."""
    pl.seed_everything(seed, verbose=False)
    model = SupConModule(
        encoder="small_cnn",
        in_channels=1,
        num_classes=10,
        loss=SupConLoss(denominator=denominator),
        **RECIPE,
        online=OnlineEval(probe=False, knn_k=0),
    )
    quiet_trainer(epochs, root).fit(model, datamodule=LongTailDigits(ratio, seed, batch_size=BATCH, n_views=2))
    encoder = save_encoder(model, Path(root) / f"encoder_{denominator}_{ratio}_{seed}.pt")
    probe = LinearProbeModule(
        str(encoder), encoder="small_cnn", in_channels=1, num_classes=10, retrieval=False, **PROBE_RECIPE
    )
    data = LongTailDigits(ratio, seed, batch_size=BATCH, n_views=1)
    quiet_trainer(probe_epochs, root).fit(probe, datamodule=data)
    return _scores(probe, data)


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{100 * statistics.mean(values):.1f} ± {100 * std:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[10.0, 100.0], help="imbalance ratios")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of SupCon pretraining")
    parser.add_argument("--probe-epochs", type=int, default=10, help="epochs of the linear probe")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="ratio 10, 1 seed, 2 + 1 epochs: check that it runs")
    args = parser.parse_args()
    if args.quick:
        args.ratios, args.seeds, args.epochs, args.probe_epochs = [10.0], 1, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="pytorch_lightning")

    results: dict[tuple[float, str], list[tuple[float, float]]] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        for ratio in args.ratios:
            for seed in range(args.seeds):
                for name, denominator in LOSSES.items():
                    tic = time.perf_counter()
                    scores = run(denominator, ratio, seed, args.epochs, args.probe_epochs, root)
                    results.setdefault((ratio, name), []).append(scores)
                    print(
                        f"ratio {ratio:g} seed {seed} {name}: balanced accuracy {100 * scores[0]:.2f}%, "
                        f"rare classes {100 * scores[1]:.2f}% ({time.perf_counter() - tic:.0f} s)",
                        flush=True,
                    )
    total = time.perf_counter() - start

    sizes = {r: sum(long_tail_counts([144] * 10, r)) for r in args.ratios}
    print(
        f"\nLong-tailed digits (train: {', '.join(f'ratio {r:g} ~{n} images' for r, n in sizes.items())}; val: 360, "
        f"balanced), small CNN, {args.epochs} SupCon epochs + {args.probe_epochs} linear-probe epochs, batch {BATCH}, "
        f"{args.seeds} seed(s)\n"
    )
    print("| imbalance ratio | loss | balanced accuracy (%) | rare classes 7-9 (%) | per seed (balanced) |")
    print("|---:|---|---:|---:|---|")
    for (ratio, name), seed_scores in results.items():
        balanced = [s[0] for s in seed_scores]
        rare = [s[1] for s in seed_scores]
        per_seed = ", ".join(f"{100 * b:.1f}" for b in balanced)
        print(f"| {ratio:g} | {name} | {_mean_std(balanced)} | {_mean_std(rare)} | {per_seed} |")
    print(f"\nMachine: {machine()}. Total wall time: {total / 60:.1f} min.")


if __name__ == "__main__":
    main()
