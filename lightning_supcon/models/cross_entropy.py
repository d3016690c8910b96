"""CrossEntropyModule: an encoder and a linear classifier trained end to end with cross-entropy, the baseline of [0].

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362 (Table 2,
  "Cross-Entropy" rows; reference recipe for CIFAR: batch 1024, lr 0.8, cosine, 500 epochs)

The module is also the base of :class:`~lightning_supcon.models.linear_probe.LinearProbeModule`, which freezes the
encoder: both are "encoder, then ``nn.Linear(feature_dim, num_classes)``, then cross-entropy", with the same
metrics and the same prediction output.
"""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_supcon.models.checkpoint import CHECKPOINT_KEY
from lightning_supcon.models.encoders import resolve_encoder
from lightning_supcon.models.labels import check_labels
from lightning_supcon.models.optimization import OptimizationMixin, OptimizerName, ScalingRule, check_schedule

TrainViews = Literal["all", "first", "single"]
TRAIN_VIEWS: tuple[str, ...] = ("all", "first", "single")


class CrossEntropyModule(OptimizationMixin, pl.LightningModule):
    """Supervised training of an encoder with a linear classifier and cross-entropy (the baseline of [0]).

    Training batches are ``(inputs, labels)``. With the project's DataModules the inputs are views
    ``(batch, n_views, *input_shape)``; ``train_views`` says how they are used (set ``data.n_views: 1`` to load a
    single augmented view per image, as the reference recipe does). Evaluation and prediction batches are single
    images ``(batch, *input_shape)``.

    Logs ``train/loss``, ``train/top1``, ``val/loss``, ``val/top1``, ``val/top5`` and the same under ``test/``
    (top-k accuracies are torchmetrics states, summed over processes under DDP). ``predict_step`` returns
    ``{"features", "logits", "labels"}``.

    Args:
        encoder: A built-in name (``"small_cnn"``, ``"resnet18"``, ..., ``"resnet50"``) or any ``nn.Module`` mapping
            inputs to ``(batch, feature_dim)`` features.
        feature_dim: Size of the encoder's features; inferred for built-ins and modules with ``feature_dim``.
        in_channels: Image channels for built-in encoders (linked from the DataModule by the CLI).
        num_classes: Number of classes (linked from the DataModule by the CLI).
        train_views: ``"all"``: training inputs are ``(B, V, ...)`` and each view is a sample (labels repeated);
            ``"first"``: ``(B, V, ...)``, only view 0 is used; ``"single"``: training inputs are ``(B, ...)``.
        label_smoothing: Label smoothing of the cross-entropy (0: none, as in [0]).
        optimizer: ``"sgd"`` (momentum), ``"lars"``, ``"adamw"`` or ``"rmsprop"``.
        lr: Base learning rate, scaled by ``lr_scaling``.
        lr_scaling: ``"linear"``: ``lr * global_batch / 256``; ``"sqrt"``; ``"none"``.
        momentum: Momentum of SGD / LARS / RMSProp.
        weight_decay: Weight decay (not applied to biases and norm layers).
        warmup_epochs: Linear warmup length in epochs; then cosine decay per step.
        min_lr_ratio: Final learning rate of the cosine as a fraction of the peak.
        lr_decay_epochs: Step decay instead of cosine: the learning rate is multiplied by ``lr_decay_rate`` after
            each of these epochs (the reference code's default schedule, e.g. ``[60, 75, 90]`` with rate 0.2 for
            the linear stage); ``None``: cosine.
        lr_decay_rate: The factor of each step decay, in ``(0, 1]``.

    Raises:
        ValueError: For ``num_classes < 2``, an unknown ``train_views`` or a negative ``label_smoothing``; during
            training, for inputs without the view dimension or labels outside ``[0, num_classes)``.

    Example:
        >>> import torch
        >>> model = CrossEntropyModule(encoder="small_cnn", in_channels=1, num_classes=10)
        >>> model(torch.randn(4, 1, 16, 16)).shape
        torch.Size([4, 10])
    """

    wants_train_bank = False
    checkpoint_kind = "cross_entropy"

    def __init__(
        self,
        encoder: nn.Module | str = "small_cnn",
        feature_dim: int | None = None,
        in_channels: int = 3,
        num_classes: int = 10,
        train_views: TrainViews = "all",
        label_smoothing: float = 0.0,
        optimizer: OptimizerName = "sgd",
        lr: float = 0.1,
        lr_scaling: ScalingRule = "none",
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 0.0,
        min_lr_ratio: float = 0.0,
        lr_decay_epochs: list[float] | None = None,
        lr_decay_rate: float = 0.1,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"Expected `num_classes` >= 2, but got {num_classes}.")
        if train_views not in TRAIN_VIEWS:
            raise ValueError(f"Expected argument `train_views` to be one of {TRAIN_VIEWS}, but got {train_views!r}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"Expected argument `label_smoothing` in [0, 1), but got {label_smoothing}.")
        check_schedule(lr_decay_epochs, lr_decay_rate, min_lr_ratio)
        self.save_hyperparameters(ignore=[] if isinstance(encoder, str) else ["encoder"])
        self.encoder, self.feature_dim = resolve_encoder(encoder, in_channels, feature_dim)
        self.encoder_name = encoder if isinstance(encoder, str) else type(encoder).__name__
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        self.num_classes = num_classes
        self.train_views = train_views
        self.label_smoothing = label_smoothing
        top5 = min(5, num_classes)
        self.train_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.test_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.test_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")

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
        check_labels(labels, inputs.shape[0], self.num_classes)
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
        return inputs.flatten(0, 1), labels.repeat_interleave(n_views)  # sample-major, as the views are stored

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, labels = self._training_inputs(*batch)
        logits = self(inputs)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        self.train_top1(logits, labels)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        self.log("train/top1", self.train_top1, prog_bar=True)
        return loss

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        """Update the ``stage`` metrics with one batch; returns the encoder features ``(batch, feature_dim)``."""
        images, labels = batch
        features = self.features(images)
        logits = self.classifier(features)
        top1, top5 = getattr(self, f"{stage}_top1"), getattr(self, f"{stage}_top5")
        top1(logits, labels)
        top5(logits, labels)
        self.log(f"{stage}/loss", F.cross_entropy(logits, labels), sync_dist=True, add_dataloader_idx=False)
        self.log(f"{stage}/top1", top1, prog_bar=True, add_dataloader_idx=False)
        self.log(f"{stage}/top5", top5, add_dataloader_idx=False)
        return features

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        images, labels = batch if isinstance(batch, list | tuple) else (batch, None)
        features = self.features(images)
        out = {"features": features, "logits": self.classifier(features)}
        if labels is not None:
            out["labels"] = labels
        return out

    def encoder_metadata(self) -> dict[str, Any]:
        """What a checkpoint records about the encoder, under ``checkpoint["lightning_supcon"]``."""
        return {
            "kind": self.checkpoint_kind,
            "encoder": self.encoder_name,
            "feature_dim": self.feature_dim,
            "in_channels": self.hparams.get("in_channels"),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.encoder_metadata()
