"""Online evaluation of an encoder while it trains: a linear probe on detached features, a weighted kNN and, when
the DataModule names an out-of-distribution split, the kNN OOD metrics.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362 (linear
  evaluation of the frozen encoder)
- [1] Wu et al., Unsupervised Feature Learning via Non-Parametric Instance Discrimination, CVPR 2018,
  https://arxiv.org/abs/1805.01978 (weighted kNN)
- [2] Sun et al., Out-of-Distribution Detection with Deep Nearest Neighbors, ICML 2022,
  https://arxiv.org/abs/2204.06507 (the k-th nearest-neighbour distance score)

A plain ``nn.Module`` holding the probe, its metrics and the kNN metric; the LightningModule that owns it calls
its steps and logs what they return. With ``multilabel=True`` the labels are multi-hot ``(N, num_labels)``: the
probe is trained with binary cross-entropy and both are rated by mAP, F1 and label accuracy
(:mod:`lightning_supcon.metrics.multilabel`). The kNN bank is the clean training set, encoded at the end of each
evaluation epoch (:func:`~lightning_supcon.utils.bank.bank_batches` reads it from the DataModule); the OOD split
(:func:`~lightning_supcon.utils.bank.ood_loader`) is encoded after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from lightning_supcon.metrics.knn import BankDtype, KNNAccuracy
from lightning_supcon.metrics.knn_multilabel import MultilabelKNN
from lightning_supcon.metrics.multilabel import check_num_labels, multilabel_metrics
from lightning_supcon.metrics.ood import KNNOODScore
from lightning_supcon.metrics.retrieval import RetrievalMetrics
from lightning_supcon.metrics.topk import TopKAccuracy
from lightning_supcon.models.labels import classifier_loss, known
from lightning_supcon.utils.numerics import l2_normalize

STAGES = ("val", "test")


def accuracy_metrics(num_classes: int, top5: bool = True) -> MetricCollection:
    """Micro-averaged top-1 (and top-5, or top-``num_classes`` when fewer) accuracy, as ``{"top1", "top5"}``.

    Ties between scores go to the lower class index in every top-k (:class:`~lightning_supcon.metrics.TopKAccuracy`;
    torchmetrics' ``MulticlassAccuracy`` can credit a sample in top-1 and not in top-5).

    Example:
        >>> sorted(accuracy_metrics(10).clone(prefix="val/").keys(keep_base=False))
        ['val/top1', 'val/top5']
    """
    metrics: dict[str, Any] = {"top1": TopKAccuracy(num_classes, top_k=1)}
    if top5:
        metrics["top5"] = TopKAccuracy(num_classes, top_k=min(5, num_classes))
    return MetricCollection(metrics)


def classifier_metrics(num_classes: int, multilabel: bool, train: bool = False) -> MetricCollection:
    """The metrics of a classifier's scores: top-1 (and top-5 unless ``train``) accuracy of class logits, or with
    ``multilabel`` the ``f1`` and ``accuracy`` (and ``map`` unless ``train``) of label probabilities.

    Example:
        >>> sorted(classifier_metrics(3, multilabel=True).keys())
        ['accuracy', 'f1', 'map']
    """
    return (
        multilabel_metrics(num_classes, ranking=not train) if multilabel else accuracy_metrics(num_classes, not train)
    )


def metric_scores(logits: Tensor, multilabel: bool) -> Tensor:
    """What :func:`classifier_metrics` rate: the logits of classes, the probabilities (sigmoid) of labels."""
    return logits.sigmoid() if multilabel else logits


@dataclass(frozen=True)
class OnlineEval:
    """What a LightningModule evaluates while it trains, as one record (``online:`` in a config, like ``schedule:``).

    Args:
        probe: Train a linear probe on detached encoder features (its own parameter group, no weight decay).
        probe_lr: Learning rate of the probe (not scaled by the batch).
        knn_k: Neighbours of the weighted kNN against the clean training set; 0 turns it off (and the clean
            training pass with it).
        knn_temperature: Temperature of the kNN vote weights.
        knn_bank_dtype: Storage dtype of the kNN bank, sharded over the processes (``"bfloat16"`` halves it);
            ``None``: the features' dtype. See :class:`~lightning_supcon.metrics.KNNAccuracy`.
        retrieval: Also log the leave-one-out retrieval metrics of the evaluation features (``{stage}/precision_at_1``,
            ``r_precision``, ``map_at_r``; :class:`~lightning_supcon.metrics.RetrievalMetrics`).
        ood_k: Which neighbour's distance scores out-of-distribution samples ([2]; 50, its CIFAR-10 value) when the
            DataModule names an OOD split (``{stage}/ood_auroc``, ``ood_aupr_in``, ``ood_aupr_out``, ``ood_fpr95``);
            0 turns it off. Without an OOD split it costs nothing. The OOD bank is stored in ``knn_bank_dtype``.

    Raises:
        ValueError: For ``knn_k < 0`` or ``ood_k < 0``, a ``knn_temperature`` or ``probe_lr`` that is not positive.

    Example:
        >>> OnlineEval(knn_k=20)  # doctest: +NORMALIZE_WHITESPACE
        OnlineEval(probe=True, probe_lr=0.1, knn_k=20, knn_temperature=0.07, knn_bank_dtype=None, retrieval=False,
                   ood_k=50)
    """

    probe: bool = True
    probe_lr: float = 0.1
    knn_k: int = 200
    knn_temperature: float = 0.07
    knn_bank_dtype: BankDtype | None = None
    retrieval: bool = False
    ood_k: int = 50

    def __post_init__(self) -> None:
        if self.knn_k < 0:
            raise ValueError(f"Expected `online.knn_k` >= 0 (0 turns kNN off), but got {self.knn_k}.")
        if self.ood_k < 0:
            raise ValueError(f"Expected `online.ood_k` >= 0 (0 turns the OOD metrics off), but got {self.ood_k}.")
        if not self.knn_temperature > 0:
            raise ValueError(f"Expected `online.knn_temperature` > 0, but got {self.knn_temperature}.")
        if not self.probe_lr > 0:
            raise ValueError(f"Expected `online.probe_lr` > 0, but got {self.probe_lr}.")


def is_headline(name: str) -> bool:
    """Whether a logged metric goes to the progress bar: top-1 accuracy, or mAP for multi-label data."""
    return name.endswith(("top1", "map"))


class OnlineEvaluation(nn.Module):
    """A linear probe on detached features, a weighted kNN classifier and the kNN OOD metrics of [2].

    Logged names (by the owning module): ``train/probe_loss``, ``train/probe_top1``, ``{stage}/probe_top1``,
    ``{stage}/probe_top5`` and ``{stage}/knn_top1``, ``{stage}/knn_top5`` for ``stage`` in ``val``, ``test``; with
    ``multilabel``: ``train/probe_f1``, ``train/probe_accuracy``, ``{stage}/probe_map``, ``{stage}/probe_f1``,
    ``{stage}/probe_accuracy`` and ``{stage}/knn_map``, ``{stage}/knn_f1``, ``{stage}/knn_accuracy``; and
    ``{stage}/ood_auroc``, ``ood_aupr_in``, ``ood_aupr_out``, ``ood_fpr95`` in an epoch the owner began with
    ``begin_epoch(ood_split=True)`` (:meth:`ood_results`).

    OOD: the in-distribution queries are every evaluation sample (labelled or not), the bank every clean training
    sample (:meth:`fill_bank`), the out-of-distribution queries the OOD split (:meth:`score_ood`); all L2-normalised
    in the features' dtype, as the kNN's. Memory per rank: the OOD bank is the kNN's own tensors where the kNN stores
    every sample of a bank batch (all labelled: one copy for both, plus 8 bytes per entry), else its own copy in
    ``knn_bank_dtype``; the queries likewise share the kNN's when a batch is all labelled; plus the OOD split's
    features. Under DDP each rank keeps its shard (:class:`~lightning_supcon.metrics.KNNOODScore`).

    Args:
        feature_dim: Size of the encoder features.
        num_classes: Number of classes, or of labels with ``multilabel``.
        probe: Train a linear probe (its own parameter group, learning rate ``probe_lr``, no weight decay).
        probe_lr: Learning rate of the probe.
        knn_k: Neighbours of the kNN; 0 turns it off (and the clean training pass with it).
        knn_temperature: Temperature of the kNN vote weights.
        knn_bank_dtype: Storage dtype of the kNN bank (``"bfloat16"`` halves it); ``None``: the features' dtype.
        multilabel: Labels are multi-hot ``(N, num_classes)``: binary cross-entropy and multi-label metrics.
        retrieval: Also rate the evaluation features by leave-one-out retrieval (:meth:`retrieval_results`).
        ood_k: Which neighbour's distance scores a sample for the OOD metrics; 0 turns them off.

    Raises:
        ValueError: For ``num_classes < 2`` (labels per sample with ``multilabel``), ``knn_k < 0`` or ``ood_k < 0``.

    Example:
        >>> import torch
        >>> online = OnlineEvaluation(feature_dim=4, num_classes=3, knn_k=2)
        >>> loss = online.training_step(torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]))
        >>> _ = online.eval_step(torch.randn(3, 4), torch.tensor([0, 1, 2]), "val")
        >>> online.fill_bank(lambda images: images, [(torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]))])
        >>> sorted(online.knn_results("val")), loss.shape
        (['val/knn_top1'], torch.Size([]))
        >>> online.begin_epoch(ood_split=True)
        >>> _ = online.eval_step(torch.randn(3, 4), torch.tensor([0, 1, 2]), "val")
        >>> online.fill_bank(lambda images: images, [(torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]))])
        >>> online.score_ood(lambda images: images, [(torch.randn(2, 4), torch.tensor([-1, -1]))])
        >>> sorted(online.ood_results("val"))
        ['val/ood_aupr_in', 'val/ood_aupr_out', 'val/ood_auroc', 'val/ood_fpr95']
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        probe: bool = True,
        probe_lr: float = 0.1,
        knn_k: int = 200,
        knn_temperature: float = 0.07,
        multilabel: bool = False,
        knn_bank_dtype: BankDtype | None = None,
        retrieval: bool = False,
        ood_k: int = 50,
    ) -> None:
        super().__init__()
        if multilabel:
            check_num_labels(num_classes)  # torchmetrics' multilabel metrics need 2 labels: refused here, in one line
        elif num_classes < 2:
            raise ValueError(f"Expected `num_classes` >= 2, but got {num_classes}.")
        if knn_k < 0:
            raise ValueError(f"Expected `knn_k` >= 0 (0 turns kNN off), but got {knn_k}.")
        if ood_k < 0:
            raise ValueError(f"Expected `ood_k` >= 0 (0 turns the OOD metrics off), but got {ood_k}.")
        self.probe_lr = probe_lr
        self.multilabel = multilabel
        self.probe = nn.Linear(feature_dim, num_classes) if probe else None
        self.train_metrics = classifier_metrics(num_classes, multilabel, train=True).clone(prefix="train/probe_")
        self.eval_metrics = nn.ModuleDict(
            {stage: classifier_metrics(num_classes, multilabel).clone(prefix=f"{stage}/probe_") for stage in STAGES}
        )
        knn_class = MultilabelKNN if multilabel else KNNAccuracy
        self.knn = (
            knn_class(num_classes, k=knn_k, temperature=knn_temperature, bank_dtype=knn_bank_dtype)
            if knn_k > 0
            else None
        )
        self.retrieval = nn.ModuleDict({stage: RetrievalMetrics() for stage in STAGES}) if retrieval else None
        # One bank dtype for both, so the OOD bank can be the kNN's own tensors (`update(..., stored=True)`).
        self.ood = KNNOODScore(k=ood_k, bank_dtype=knn_bank_dtype) if ood_k > 0 else None
        self.ood_on = False  # this epoch's OOD metrics run: set by `begin_epoch`

    def begin_epoch(self, ood_split: bool) -> None:
        """Start an evaluation epoch: the OOD metrics run in it when they are on (``ood_k > 0``) and the owner has an
        OOD split (``ood_split``, the same on every rank: the DataModule's); otherwise nothing of them is stored or
        encoded. Leftovers of an interrupted epoch are dropped."""
        self.ood_on = self.ood is not None and ood_split
        if self.ood is not None:
            self.ood.reset()

    def training_step(self, features: Tensor, labels: Tensor, detach: bool = True) -> Tensor | None:
        """The probe's cross-entropy (binary with ``multilabel``) on ``features`` ``(N, feature_dim)`` with
        ``labels`` ``(N,)`` (``(N, num_classes)`` multi-hot), and an update of ``train_metrics``; ``None`` without a
        probe. ``detach=False`` lets the loss's gradient reach the features (a classifier trained jointly with the
        encoder); by default the probe only reads them. Samples of unknown class (``-1``) are left out (a batch
        without a known label gives a zero loss)."""
        if self.probe is None:
            return None
        labelled = known(labels)
        features, labels = features[labelled], labels[labelled]
        logits = self.probe(features.detach() if detach else features)
        if not labelled.any():
            return logits.sum() * 0.0  # zero, and still a graph for the optimiser
        # forward: the batch value for on_step logging, and accumulate
        self.train_metrics(metric_scores(logits.detach(), self.multilabel), labels)
        return classifier_loss(logits, labels, self.multilabel)

    def eval_step(self, features: Tensor, labels: Tensor, stage: str) -> MetricCollection | None:
        """Update the kNN queries and the probe's ``stage`` metrics with one evaluation batch (its samples of
        known class), and the in-distribution OOD queries (all its samples) in an OOD epoch.

        Returns:
            The probe metrics to log, or ``None`` without a probe. They are returned even for a batch with no known
            label (then not updated): the owner logs them on every rank alike, because Lightning computes a logged
            metric at the epoch's end with a gather that a rank which never logged it would not join.
        """
        labelled = known(labels)
        if self.ood_on or (self.knn is not None and labelled.any()):
            queries = l2_normalize(features, dim=1)
            if self.ood is not None and self.ood_on:  # every evaluation sample is in-distribution, labelled or not
                self.ood.update(queries, torch.zeros(len(queries), dtype=torch.long, device=queries.device))
            if self.knn is not None and labelled.any():  # all labelled: the same tensor as the OOD queries
                self.knn.update(queries if labelled.all() else queries[labelled], labels[labelled], bank=False)
        features, labels = features[labelled], labels[labelled]
        if self.retrieval is not None and labelled.any():
            retrieval = self.retrieval[stage]
            assert isinstance(retrieval, RetrievalMetrics)
            retrieval.update(features.float(), labels)
        if self.probe is None:
            return None
        metrics = self.eval_metrics[stage]
        assert isinstance(metrics, MetricCollection)
        if labelled.any():
            metrics(metric_scores(self.probe(features), self.multilabel), labels)
        return metrics

    @torch.no_grad()
    def fill_bank(self, encode: Callable[[Tensor], Tensor], batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        """Add the features ``encode(images)`` of the clean training ``batches`` to the kNN bank, and in an OOD epoch
        all of them to the OOD bank (each sample encoded once for both); the kNN keeps only samples of known class,
        and without the OOD metrics the others are not encoded. No pass (``batches`` not read) when both are off."""
        ood = self.ood if self.ood_on else None
        if self.knn is None and ood is None:
            return
        for images, labels in batches:
            labelled = known(labels)
            if ood is None:  # the kNN alone: encode only what it keeps
                images, labels, labelled = images[labelled], labels[labelled], labelled[labelled]
            if len(images) == 0:
                continue
            features = l2_normalize(encode(images), dim=1)
            stored = None
            if self.knn is not None and labelled.any():
                every = bool(labelled.all())
                self.knn.update(features if every else features[labelled], labels[labelled], bank=True)
                stored = self.knn.bank_features[-1] if every else None  # normalised, in the shared bank dtype
            if ood is not None:
                ood.update(features if stored is None else stored, bank=True, stored=stored is not None)

    @torch.no_grad()
    def score_ood(self, encode: Callable[[Tensor], Tensor], batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        """Add the features ``encode(images)`` of the OOD split's ``batches`` (their labels are not read) as
        out-of-distribution queries; no pass (``batches`` not read) outside an OOD epoch."""
        if self.ood is None or not self.ood_on:
            return
        for images, _ in batches:
            if len(images):
                features = l2_normalize(encode(images), dim=1)
                self.ood.update(features, torch.ones(len(features), dtype=torch.long, device=features.device))

    def knn_results(self, stage: str) -> dict[str, Tensor]:
        """``{"{stage}/knn_top1": ..., "{stage}/knn_top5": ...}`` (``knn_map``, ``knn_f1``, ``knn_accuracy`` with
        ``multilabel``) over every rank's samples, then reset; empty when the kNN is off or no rank saw a bank entry
        or no rank a query. Under DDP every rank must call it, and every rank gets the same keys: the decision is
        global (a rank whose own bank shard holds no labelled sample still joins the gathers of the others)."""
        if self.knn is None:
            return {}
        results: dict[str, Tensor] = {}
        if self.knn.has_data():  # collective: never decide on this rank's own states alone
            results = {f"{stage}/knn_{name}": value for name, value in self.knn.compute().items()}
        self.knn.reset()
        return results

    def ood_results(self, stage: str) -> dict[str, Tensor]:
        """``{"{stage}/ood_auroc", "{stage}/ood_aupr_in", "{stage}/ood_aupr_out", "{stage}/ood_fpr95"}`` (float64,
        :func:`~lightning_supcon.metrics.ood_metrics`) over every rank's samples, then reset and off until the next
        :meth:`begin_epoch`; empty outside an OOD epoch, or when no rank holds a bank entry, an in-distribution or an
        out-of-distribution query. Under DDP every rank must call it (a collective decides, as for
        :meth:`knn_results`)."""
        if self.ood is None or not self.ood_on:
            return {}
        results: dict[str, Tensor] = {}
        if self.ood.has_data():  # collective: a rank with an empty OOD shard or no evaluation batch still joins
            results = {f"{stage}/ood_{name}": value for name, value in self.ood.compute().items()}
        self.ood.reset()
        self.ood_on = False
        return results

    @classmethod
    def of(cls, settings: OnlineEval, feature_dim: int, num_classes: int, multilabel: bool = False) -> OnlineEvaluation:
        """The online evaluation a module's :class:`OnlineEval` record asks for.

        Example:
            >>> OnlineEvaluation.of(OnlineEval(probe=False, knn_k=0), feature_dim=4, num_classes=3).probe is None
            True
        """
        return cls(
            feature_dim,
            num_classes,
            settings.probe,
            settings.probe_lr,
            settings.knn_k,
            settings.knn_temperature,
            multilabel=multilabel,
            knn_bank_dtype=settings.knn_bank_dtype,
            retrieval=settings.retrieval,
            ood_k=settings.ood_k,
        )

    def retrieval_results(self, stage: str) -> dict[str, Tensor]:
        """``{"{stage}/precision_at_1", "{stage}/r_precision", "{stage}/map_at_r"}`` over every rank's samples, then
        reset; empty when retrieval is off or no rank saw a sample. Under DDP every rank must call it (a collective
        decides, as for :meth:`knn_results`)."""
        if self.retrieval is None:
            return {}
        retrieval = self.retrieval[stage]
        assert isinstance(retrieval, RetrievalMetrics)
        results: dict[str, Tensor] = {}
        if retrieval.has_data():  # collective: a rank that ran no evaluation batch still joins the gathers
            results = {f"{stage}/{name}": value for name, value in retrieval.compute().items()}
        retrieval.reset()
        return results

    def param_groups(self) -> list[dict[str, Any]]:
        """The probe's parameter group: its own learning rate, no weight decay, no LARS adaptation."""
        if self.probe is None:
            return []
        params = list(self.probe.parameters())
        return [{"params": params, "lr": self.probe_lr, "weight_decay": 0.0, "lars_exclude": True}]
