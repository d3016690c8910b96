"""One training run of ``evidence.py``: a SupCon encoder + its linear stage, or cross-entropy end to end, on a data
set made locally, then every measurement the claims read (top-1, online probe, corrupted copies, OOD scores).

A run is a :class:`Spec` (data set, arm, the settings that differ from :data:`BASE`) and a seed. The seed is set
with ``seed_everything`` right before each arm builds its model and DataModule, so both arms of a seed start from
the same encoder weights (both build the encoder first) and see the same data order and augmentation draws (the
DataModule takes its seed from ``seed_everything``).

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from common import quiet_trainer
from evidence_data import CORRUPTIONS, SEVERITIES, DigitsSubset, HardDigits, corrupt, far_ood_images, tensors
from torch import Tensor, nn

from lightning_supcon import DigitsDataModule, LinearProbeModule, OnlineEval, Queue, Schedule, SupConLoss, SupConModule
from lightning_supcon.data.digits import DIGITS_RECIPE
from lightning_supcon.data.recipe import AugmentRecipe
from lightning_supcon.data.subsets import label_subset
from lightning_supcon.encoder_files import save_encoder
from lightning_supcon.metrics.ood_functional import knn_ood_score, msp_score, ood_metrics
from lightning_supcon.models import CrossEntropyModule
from lightning_supcon.models.optimization import sgd

Data = Literal["digits", "hard", "digits04"]
Arm = Literal["supcon", "ce"]

#: The digits recipe of ``configs/digits.yaml`` (and ``benchmarks/digits_eval.py``): small CNN, SGD lr 0.1, weight
#: decay 5e-4, 2 warmup epochs then cosine, SupCon L_out at temperature 0.1, MLP head, 2 views per image.
BASE: dict[str, Any] = {
    "labels": 1.0,
    "loss": "out",
    "temperature": 0.1,
    "batch": 128,
    "augment": "digits",
    "lr": 0.1,
    "warmup": 2.0,
    "head": "mlp",
    "queue": 0,
    "ce_weight": 0.0,
    "epochs_x": 1,
}
AUGMENTS: dict[str, AugmentRecipe] = {
    "digits": DIGITS_RECIPE,
    "weak": AugmentRecipe(scale=(0.9, 1.0), ratio=(0.95, 1.05), flip=False, translate=0.05, colour="none"),
    "strong": AugmentRecipe(
        scale=(0.25, 1.0), ratio=(0.7, 1.4), flip=False, degrees=25.0, translate=0.2, colour="none", blur_p=0.5
    ),
}
PROBE_LR = 0.5  # the linear stage of configs/digits_linear.yaml
FULL_STEPS = 1437 // 128  # optimiser steps per epoch of the full digits at the base batch
OOD_IN = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Spec:
    """A data set, an arm and the settings that differ from :data:`BASE` (sorted ``(name, value)`` pairs)."""

    data: Data
    arm: Arm
    delta: tuple[tuple[str, Any], ...] = ()

    def settings(self) -> dict[str, Any]:
        unknown = {name for name, _ in self.delta} - set(BASE)
        if unknown:
            raise ValueError(f"Unknown settings {sorted(unknown)}; expected names among {sorted(BASE)}.")
        return BASE | dict(self.delta)

    def label(self) -> str:
        """``data/arm`` and the deltas, e.g. ``digits/supcon[batch=32]``: the run's name in the results file."""
        text = ",".join(f"{k}={v}" for k, v in self.delta)
        return f"{self.data}/{self.arm}" + (f"[{text}]" if text else "")


def spec(data: Data, arm: Arm, **delta: Any) -> Spec:
    """A :class:`Spec` from keyword deltas, e.g. ``spec("digits", "supcon", batch=32)``."""
    return Spec(data, arm, tuple(sorted(delta.items())))


def make_data(data: Data, batch: int, n_views: int, labels: float, augment: str, seed: int) -> DigitsDataModule:
    options: dict[str, Any] = {"batch_size": batch, "n_views": n_views, "augment": AUGMENTS[augment]}
    if labels < 1.0:
        options |= {"label_fraction": labels, "subset_seed": seed}
    if data == "hard":
        return HardDigits(**options)
    if data == "digits04":
        return DigitsSubset(classes=OOD_IN, **options)
    return DigitsDataModule(**options)


def budget(data: Data, settings: dict[str, Any], seed: int, epochs: int) -> tuple[int, int]:
    """Batch size and epochs: with a label fraction the batch is at most the labelled images, and the epochs grow so
    that every arm takes the optimiser steps of ``epochs`` on the full split at the base batch."""
    epochs *= settings["epochs_x"]
    if settings["labels"] >= 1.0:
        return settings["batch"], epochs
    train = make_data(data, 8, 1, 1.0, "digits", seed).dataset("train")
    assert train is not None
    count = len(label_subset(train, settings["labels"], seed))
    batch = min(settings["batch"], count)
    return batch, math.ceil(epochs * FULL_STEPS / (count // batch))


def build(spec: Spec, num_classes: int) -> pl.LightningModule:
    s = spec.settings()
    recipe: dict[str, Any] = {
        "optimizer": sgd(lr=s["lr"], weight_decay=5e-4),
        "schedule": Schedule(warmup_epochs=s["warmup"]),
    }
    common: dict[str, Any] = {"encoder": "small_cnn", "in_channels": 1, "num_classes": num_classes}
    if spec.arm == "ce":
        return CrossEntropyModule(train_views="all", **common, **recipe)
    return SupConModule(
        loss=SupConLoss(temperature=s["temperature"], summation=s["loss"]),
        projection_head=s["head"],
        online=OnlineEval(probe=True, knn_k=0),  # the online probe, detached unless ce_weight > 0
        ce_weight=s["ce_weight"],
        queue=Queue(size=s["queue"]) if s["queue"] else None,
        **common,
        **recipe,
    )


@torch.no_grad()
def _apply(fn: nn.Module | Any, images: Tensor, normalize: Any) -> Tensor:
    return torch.cat([fn(normalize(chunk)) for chunk in images.split(512)])


def train(spec: Spec, seed: int, epochs: int, probe_epochs: int, corruptions: bool, root: str) -> dict[str, Any]:
    """Train ``spec`` with ``seed``; return its measurements (fractions in [0, 1]).

    Keys: ``top1`` (the protocol: the linear stage for SupCon, the classifier for CE), ``online_probe_top1``
    (SupCon: the probe trained during stage 1), ``corruption_errors`` (by corruption, top-1 error per severity)
    with ``corruptions``, and for ``digits04`` the OOD scores of the encoder features (``ood``).
    """
    s = spec.settings()
    batch, run_epochs = budget(spec.data, s, seed, epochs)
    pl.seed_everything(seed, verbose=False)
    data = make_data(spec.data, batch, 2, s["labels"], s["augment"], seed)
    model = build(spec, data.num_classes)
    quiet_trainer(run_epochs, root).fit(model, datamodule=data)
    model.eval()
    out: dict[str, Any] = {"batch": batch, "epochs": run_epochs}
    val_images, val_labels = tensors(data.dataset("val"))
    if isinstance(model, SupConModule):
        assert model.online.probe is not None
        online = _apply(lambda x: model.online.probe(model(x)), val_images, data.normalize)
        out["online_probe_top1"] = (online.argmax(1) == val_labels).float().mean().item()
        encoder = save_encoder(model, Path(root) / "encoder.pt")
        pl.seed_everything(seed, verbose=False)
        probe_data = make_data(spec.data, batch, 1, s["labels"], s["augment"], seed)
        classifier: pl.LightningModule = LinearProbeModule(
            str(encoder),
            encoder="small_cnn",
            in_channels=1,
            num_classes=data.num_classes,
            retrieval=False,
            optimizer=sgd(lr=PROBE_LR, weight_decay=0.0),
        )
        quiet_trainer(math.ceil(probe_epochs * run_epochs / (epochs * s["epochs_x"])), root).fit(
            classifier, datamodule=probe_data
        )
        classifier.eval()
    else:
        classifier = model
    out["top1"] = (_apply(classifier, val_images, data.normalize).argmax(1) == val_labels).float().mean().item()
    if corruptions:
        out["corruption_errors"] = {
            name: [
                1.0
                - (_apply(classifier, corrupt(val_images, name, sev), data.normalize).argmax(1) == val_labels)
                .float()
                .mean()
                .item()
                for sev in SEVERITIES
            ]
            for name in CORRUPTIONS
        }
    if isinstance(data, DigitsSubset):
        out["ood"] = ood_scores(classifier, data)
    return out


def ood_scores(classifier: Any, data: DigitsSubset) -> dict[str, Any]:
    """kNN-distance scores (k = 50, [Sun et al. 2022]) of the encoder features against the clean training bank, for
    the in-distribution val digits, the near OOD (val digits of the other classes) and the far OOD (noise, shapes,
    inverted digits); for CE also the max softmax probability. Metrics of ``ood_metrics`` and the raw scores."""
    train_images = tensors(data.dataset("train"))[0]
    val_images = tensors(data.dataset("val"))[0]
    all_images, all_labels = tensors(data.held_out_val)
    near = all_images[~torch.isin(all_labels, torch.tensor(OOD_IN))]
    far = torch.cat(list(far_ood_images(val_images, 120).values()))
    bank = _apply(classifier.features, train_images, data.normalize)
    result: dict[str, Any] = {}
    scorers: dict[str, Any] = {"knn": lambda x: knn_ood_score(_apply(classifier.features, x, data.normalize), bank)}
    if isinstance(classifier, CrossEntropyModule):
        scorers["msp"] = lambda x: msp_score(_apply(classifier, x, data.normalize))
    for scorer, score in scorers.items():
        inside = score(val_images)
        for name, images in (("near", near), ("far", far)):
            outside = score(images)
            metrics = {k: v.item() for k, v in ood_metrics(inside, outside).items()}
            result[f"{scorer}_{name}"] = metrics | {
                "in_scores": [round(v, 5) for v in inside.tolist()],
                "out_scores": [round(v, 5) for v in outside.tolist()],
            }
    return result


def run_once(spec: Spec, seed: int, epochs: int, probe_epochs: int, corruptions: bool) -> dict[str, Any]:
    """:func:`train` in a temporary folder (the encoder file of the linear stage)."""
    with tempfile.TemporaryDirectory() as root:
        return train(spec, seed, epochs, probe_epochs, corruptions, root)
