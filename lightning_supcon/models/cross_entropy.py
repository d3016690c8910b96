"""CrossEntropyModule: an encoder and a linear classifier trained end to end with cross-entropy, the baseline of [0].

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362 (Table 2,
  "Cross-Entropy" rows; reference recipe for CIFAR: batch 1024, lr 0.8, cosine, 500 epochs)

The module is also the base of :class:`~lightning_supcon.models.linear_probe.LinearProbeModule`, which freezes the
encoder: both are "encoder, then ``nn.Linear(feature_dim, num_classes)``, then cross-entropy", with the same
metrics and the same prediction output.
"""

from __future__ import annotations

from typing import Literal, get_args

import pytorch_lightning as pl
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection

from lightning_supcon.models.encoder_checkpoint import EncoderCheckpointMixin
from lightning_supcon.models.evaluation_hooks import OnlineEvaluationHooks
from lightning_supcon.models.hparams import as_record, save_hparams
from lightning_supcon.models.labels import check_labels, classifier_loss
from lightning_supcon.models.online_eval import (
    STAGES,
    OnlineEval,
    OnlineEvaluation,
    classifier_metrics,
    is_headline,
    metric_scores,
)
from lightning_supcon.models.optimization import OptimizationMixin, Schedule, sgd
from lightning_supcon.nets.encoders import encoder_name, resolve_encoder

TrainViews = Literal["all", "first", "single"]
TRAIN_VIEWS: tuple[str, ...] = get_args(TrainViews)


class CrossEntropyModule(OptimizationMixin, EncoderCheckpointMixin, OnlineEvaluationHooks, pl.LightningModule):
    """Supervised training of an encoder with a linear classifier and cross-entropy (the baseline of [0]).

    Training batches are ``(inputs, labels)``. With the project's DataModules the inputs are views
    ``(batch, n_views, *input_shape)``; ``train_views`` says how they are used (set ``data.n_views: 1`` to load a
    single augmented view per image, as the reference recipe does). Evaluation and prediction batches are single
    images ``(batch, *input_shape)``.

    Logs ``train/loss``, ``train/top1``, ``val/loss``, ``val/top1``, ``val/top5`` and the same under ``test/``
    (top-k accuracies are torchmetrics states, summed over processes under DDP). ``predict_step`` returns
    ``{"features", "logits", "labels"}``. With ``multilabel`` the head is a multi-label classifier: one logit per
    label, binary cross-entropy, and ``train/f1``, ``train/accuracy``, ``val/map``, ``val/f1``, ``val/accuracy``
    (:mod:`lightning_supcon.metrics.multilabel`) instead of the top-k accuracies.

    Args:
        encoder: A built-in name (``"small_cnn"``, ``"resnet18"``, ..., ``"resnet50"``), a library name
            (``"torchvision/<name>"``, ``"timm/<name>"``; with options a :class:`~lightning_supcon.nets.Backbone`)
            or any ``nn.Module`` mapping inputs to ``(batch, feature_dim)`` features.
        feature_dim: Size of the encoder's features; inferred for built-ins and modules with ``feature_dim``.
        in_channels: Image channels for built-in encoders (linked from the DataModule by the CLI).
        num_classes: Number of classes, or of labels with ``multilabel`` (linked from the DataModule by the CLI).
        train_views: ``"all"``: training inputs are ``(B, V, ...)`` and each view is a sample (labels repeated);
            ``"first"``: ``(B, V, ...)``, only view 0 is used; ``"single"``: training inputs are ``(B, ...)``.
        label_smoothing: Label smoothing of the cross-entropy (0: none, as in [0]).
        multilabel: Labels are multi-hot ``(batch, num_classes)`` (linked from a multi-label DataModule by the CLI):
            binary cross-entropy per label (see :func:`~lightning_supcon.models.labels.classifier_loss`).
        online: The online kNN of the encoder features (``val/knn_top1``, as SupConModule logs):
            :class:`~lightning_supcon.models.online_eval.OnlineEval` with ``knn_k`` (0, the default: off),
            ``knn_temperature``, ``knn_bank_dtype``, and ``ood_k`` (50: ``val/ood_auroc``, ... when the DataModule
            has an OOD split); ``probe`` must stay off (the classifier is this model's own).
        optimizer: Any ``torch.optim`` optimiser or ``lightning_supcon.optim.LARS`` (LightningCLI's
            ``OptimizerCallable``); ``None``: SGD, lr 0.1, momentum 0.9, weight decay 1e-4. See
            :mod:`lightning_supcon.models.optimization`.
        schedule: Learning-rate scaling, warmup, cosine or step decay (default: none, none, cosine to 0).

    Raises:
        ValueError: For ``num_classes < 2``, an unknown ``train_views`` or a negative ``label_smoothing``; during
            training, for inputs without the view dimension or labels outside ``[0, num_classes)`` (not 0/1
            multi-hot of shape ``(batch, num_classes)`` with ``multilabel``).

    Example:
        >>> import torch
        >>> model = CrossEntropyModule(encoder="small_cnn", in_channels=1, num_classes=10)
        >>> model(torch.randn(4, 1, 16, 16)).shape
        torch.Size([4, 10])
    """

    checkpoint_kind = "cross_entropy"
    default_lr, default_weight_decay = 0.1, 1e-4  # the SGD of ``optimizer=None``

    def __init__(
        self,
        encoder: nn.Module | str = "small_cnn",
        feature_dim: int | None = None,
        in_channels: int = 3,
        num_classes: int = 10,
        train_views: TrainViews = "all",
        label_smoothing: float = 0.0,
        multilabel: bool = False,
        online: OnlineEval = OnlineEval(probe=False, knn_k=0),  # frozen, as schedule
        optimizer: OptimizerCallable | None = None,
        schedule: Schedule = Schedule(),  # frozen: a safe default, and jsonargparse shows its fields in --help
    ) -> None:
        super().__init__()
        online = as_record(online, OnlineEval) or OnlineEval(probe=False, knn_k=0)
        schedule = as_record(schedule, Schedule) or Schedule()
        if online.probe:
            raise ValueError(
                "A cross-entropy model's classifier is its own probe: set `online.probe: false` (only its kNN runs)."
            )
        if train_views not in TRAIN_VIEWS:
            raise ValueError(f"Expected argument `train_views` to be one of {TRAIN_VIEWS}, but got {train_views!r}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"Expected argument `label_smoothing` in [0, 1), but got {label_smoothing}.")
        self.optimizer = optimizer if optimizer is not None else sgd(self.default_lr, self.default_weight_decay)
        self.schedule = schedule
        save_hparams(self, encoder, optimizer=self.optimizer, schedule=self.schedule, online=online)
        self.encoder, self.feature_dim = resolve_encoder(encoder, in_channels, feature_dim)
        self.encoder_name = encoder_name(encoder)
        self.online = OnlineEvaluation.of(online, self.feature_dim, num_classes, multilabel)
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        self.num_classes = num_classes
        self.multilabel = multilabel
        self.train_views = train_views
        self.label_smoothing = label_smoothing
        self.train_metrics = classifier_metrics(num_classes, multilabel, train=True).clone(prefix="train/")
        self.eval_metrics = nn.ModuleDict(
            {stage: classifier_metrics(num_classes, multilabel).clone(prefix=f"{stage}/") for stage in STAGES}
        )

    def features(self, inputs: Tensor) -> Tensor:
        """Encoder features ``(batch, feature_dim)`` of inputs ``(batch, *input_shape)``."""
        out: Tensor = self.encoder(inputs)
        return out

    def forward(self, inputs: Tensor) -> Tensor:
        """Class logits ``(batch, num_classes)`` of inputs ``(batch, *input_shape)``."""
        logits: Tensor = self.classifier(self.features(inputs))
        return logits

    def _training_inputs(self, inputs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Flatten training inputs to single samples ``(N, *input_shape)`` and labels ``(N,)`` per ``train_views``."""
        check_labels(labels, inputs.shape[0], self.num_classes, self.multilabel)
        if self.train_views == "single":
            return inputs, labels
        if inputs.dim() < 3:
            raise ValueError(
                f"Expected training inputs of shape (batch, n_views, *input_shape) with train_views="
                f"{self.train_views!r}, but got {tuple(inputs.shape)}; use train_views='single' for plain batches."
            )
        if self.train_views == "first":
            return inputs[:, 0], labels
        n_views = inputs.shape[1]
        return inputs.flatten(0, 1), labels.repeat_interleave(n_views, dim=0)  # sample-major, as the views are stored

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, labels = self._training_inputs(*batch)
        logits = self(inputs)
        loss = classifier_loss(logits, labels, self.multilabel, self.label_smoothing)
        self.train_metrics(metric_scores(logits.detach(), self.multilabel), labels)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        self.log_dict(self.train_metrics, prog_bar=True)
        return loss

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        """Update the ``stage`` metrics with one batch; returns the encoder features ``(batch, feature_dim)``."""
        images, labels = batch
        check_labels(labels, images.shape[0], self.num_classes, self.multilabel)
        features = self.features(images)
        self.online.eval_step(features, labels, stage)
        logits = self.classifier(features)
        metrics = self.eval_metrics[stage]
        assert isinstance(metrics, MetricCollection)
        metrics(metric_scores(logits, self.multilabel), labels)
        self.log(f"{stage}/loss", classifier_loss(logits, labels, self.multilabel), sync_dist=True)
        for name, metric in metrics.items(keep_base=False):
            self.log(name, metric, prog_bar=is_headline(name))
        return features

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def encode(self, images: Tensor) -> Tensor:
        return self.features(images)

    def prediction_heads(self, features: Tensor) -> dict[str, Tensor]:
        return {"logits": self.classifier(features)}
