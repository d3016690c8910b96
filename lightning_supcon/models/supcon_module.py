"""SupConModule: encoder + projection head + SupCon loss, with online linear-probe and kNN evaluation.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_supcon.losses import SupConLoss
from lightning_supcon.losses.functional import ContrastMode, Denominator, Summation
from lightning_supcon.metrics.knn import KNNAccuracy
from lightning_supcon.models.checkpoint import CHECKPOINT_KEY
from lightning_supcon.models.encoders import resolve_encoder
from lightning_supcon.models.heads import ProjectionHead
from lightning_supcon.models.labels import check_labels
from lightning_supcon.models.optimization import OptimizationMixin, OptimizerName, ScalingRule, check_schedule
from lightning_supcon.models.queue import MemoryQueue
from lightning_supcon.utils import distributed


class SupConModule(OptimizationMixin, pl.LightningModule):
    """Supervised contrastive pretraining (stage 1 of [0]) with online evaluation.

    Batches are ``(views, labels)`` with ``views`` of shape ``(batch, n_views, *input_shape)``: augmentation belongs
    to the DataModule, so a plain DataLoader of ready-made views works too. Under DDP the loss contrasts local
    anchors with the features of every rank (``contrast_global=True``), with exact gradients.

    Online evaluation, from the first epoch: a linear probe trained on detached encoder features beside the encoder
    (``val/probe_top1``), and weighted kNN of validation features against clean training features
    (``val/knn_top1``; the DataModule supplies the clean training loader as a second validation loader when the
    module's ``wants_train_bank`` is true). ``val/loss`` is the loss of each clean evaluation batch (one view per
    sample), contrasted within its process also under DDP.

    Args:
        encoder: A built-in name (``"small_cnn"``, ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"``)
            or any ``nn.Module`` mapping inputs to ``(batch, feature_dim)`` features (no lazy modules: DDP).
        feature_dim: Size of the encoder's features; inferred for built-ins and modules with a ``feature_dim``
            attribute, required otherwise.
        in_channels: Image channels for built-in encoders (linked from the DataModule by the CLI).
        num_classes: Classes of the online probe and kNN (linked from the DataModule by the CLI).
        projection_dim: Output size of the projection head (the paper: 128).
        projection_head: ``"mlp"`` (hidden size = feature_dim, as in the paper) or ``"linear"``.
        temperature: SupCon temperature (the paper: 0.1).
        base_temperature: Loss scale ``temperature / base_temperature``; ``None`` for plain Eq. 2.
        summation: ``"out"`` (Eq. 2, L_out, the paper's choice) or ``"in"`` (Eq. 3, L_in).
        contrast_mode: ``"all"`` views are anchors, or only view ``"one"``.
        denominator: ``"all"``, ``"one_positive"`` or ``"only_negatives"`` (see :class:`SupConLoss`).
        positives_cap: At most this many positives besides the anchor's own views; ``None``: no cap.
        supervised: Use labels; ``False`` trains SimCLR (each sample its own class) on the same data.
        contrast_global: Under DDP, contrast against the global batch (all-gathered); ``False``: local only.
        loss_chunk_size: Anchors per block inside the loss for huge batches (memory ``chunk x N``).
        probe: Train the online linear probe.
        knn_k: Neighbours of the online kNN; 0 turns it off (and the clean training pass with it).
        knn_temperature: Temperature of the kNN vote weights.
        optimizer: ``"sgd"`` (momentum), ``"lars"``, ``"adamw"`` or ``"rmsprop"``.
        lr: Base learning rate, scaled by ``lr_scaling``.
        lr_scaling: ``"linear"``: ``lr * global_batch / 256``; ``"sqrt"``: ``lr * sqrt(global_batch / 256)``;
            ``"none"``.
        momentum: Momentum of SGD / LARS / RMSProp.
        weight_decay: Weight decay (not applied to biases and norm layers).
        warmup_epochs: Linear warmup length in epochs (fractions allowed); then cosine decay per step.
        min_lr_ratio: Final learning rate of the cosine as a fraction of the peak.
        lr_decay_epochs: Step decay instead of cosine: the learning rate is multiplied by ``lr_decay_rate`` after
            each of these epochs (the reference code's default schedule, e.g. ``[60, 75, 90]`` with rate 0.2 for
            the linear stage); ``None``: cosine.
        lr_decay_rate: The factor of each step decay, in ``(0, 1]``.
        probe_lr: Learning rate of the online probe (its own parameter group, no weight decay).
        queue_size: Keep the projections (and labels) of the last ``queue_size`` training views in a memory queue
            and contrast every anchor with batch + queue (for small batches); 0: off. Under DDP the gathered global
            batch is enqueued. Queue entries carry no gradient.
        queue_momentum: With a queue, fill it from a momentum encoder (MoCo-style, e.g. 0.999) updated as an
            exponential moving average of the encoder after each step; ``None``: enqueue the detached projections.
        channels_last: Convert the encoder to channels-last memory format (faster convolutions on GPUs).
        compile_encoder: ``torch.compile`` the encoder.
    """

    def __init__(
        self,
        encoder: nn.Module | str = "small_cnn",
        feature_dim: int | None = None,
        in_channels: int = 3,
        num_classes: int = 10,
        projection_dim: int = 128,
        projection_head: Literal["mlp", "linear"] = "mlp",
        temperature: float = 0.1,
        base_temperature: float | None = None,
        summation: Summation = "out",
        contrast_mode: ContrastMode = "all",
        denominator: Denominator = "all",
        positives_cap: int | None = None,
        supervised: bool = True,
        contrast_global: bool = True,
        loss_chunk_size: int | None = None,
        probe: bool = True,
        knn_k: int = 200,
        knn_temperature: float = 0.07,
        optimizer: OptimizerName = "sgd",
        lr: float = 0.05,
        lr_scaling: ScalingRule = "none",
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 0.0,
        min_lr_ratio: float = 0.0,
        lr_decay_epochs: list[float] | None = None,
        lr_decay_rate: float = 0.1,
        probe_lr: float = 0.1,
        queue_size: int = 0,
        queue_momentum: float | None = None,
        channels_last: bool = False,
        compile_encoder: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"Expected `num_classes` >= 2, but got {num_classes}.")
        if knn_k < 0:
            raise ValueError(f"Expected `knn_k` >= 0 (0 turns kNN off), but got {knn_k}.")
        if queue_size < 0:
            raise ValueError(f"Expected `queue_size` >= 0 (0 turns the queue off), but got {queue_size}.")
        check_schedule(lr_decay_epochs, lr_decay_rate, min_lr_ratio)
        if queue_momentum is not None and not (queue_size > 0 and 0.0 <= queue_momentum < 1.0):
            raise ValueError(
                f"Expected `queue_momentum` in [0, 1) together with `queue_size` > 0, but got {queue_momentum} "
                f"with queue_size={queue_size}."
            )
        self.save_hyperparameters(ignore=[] if isinstance(encoder, str) else ["encoder"])
        self.encoder, self.feature_dim = resolve_encoder(encoder, in_channels, feature_dim)
        self.encoder_name = encoder if isinstance(encoder, str) else type(encoder).__name__
        self.head = ProjectionHead(self.feature_dim, projection_dim, kind=projection_head)
        make_loss = functools.partial(
            SupConLoss,
            temperature=temperature,
            base_temperature=base_temperature,
            contrast_mode=contrast_mode,
            summation=summation,
            denominator=denominator,
            positives_cap=positives_cap,
            chunk_size=loss_chunk_size,
        )
        self.criterion = make_loss(gather_distributed=contrast_global)
        # Evaluation batches are contrasted within each process: under DDP the ranks may run different numbers of
        # evaluation batches (every sample once, no padding), so an evaluation step must hold no collective.
        self.eval_criterion = make_loss(gather_distributed=False)
        self.num_classes = num_classes
        self.supervised = supervised
        self.probe = nn.Linear(self.feature_dim, num_classes) if probe else None
        top5 = min(5, num_classes)
        self.train_probe_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_probe_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_probe_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.test_probe_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.test_probe_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.knn = KNNAccuracy(num_classes, k=knn_k, temperature=knn_temperature) if knn_k > 0 else None
        self.queue = MemoryQueue(queue_size, projection_dim) if queue_size > 0 else None
        self.momentum_encoder: nn.Module | None = None
        self.momentum_head: nn.Module | None = None
        if queue_momentum is not None:
            self.momentum_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
            self.momentum_head = copy.deepcopy(self.head).requires_grad_(False)
        if channels_last:
            self.encoder = self.encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._compile_encoder = compile_encoder

    @property
    def wants_train_bank(self) -> bool:
        """Whether validation needs the clean training set as a second loader (for the kNN bank)."""
        return self.knn is not None

    def configure_model(self) -> None:
        if self._compile_encoder and not isinstance(self.encoder, torch._dynamo.eval_frame.OptimizedModule):
            self.encoder = torch.compile(self.encoder)  # type: ignore[assignment]

    def forward(self, images: Tensor) -> Tensor:
        """Encoder features ``(batch, feature_dim)`` of images ``(batch, *input_shape)``."""
        if self.hparams.get("channels_last") and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        features: Tensor = self.encoder(images)
        return features

    def project(self, features: Tensor) -> Tensor:
        """L2-normalised projections ``(batch, projection_dim)`` of encoder features."""
        projections: Tensor = self.head(features)
        return projections

    def _check_batch(self, views: Tensor, labels: Tensor) -> None:
        if views.dim() < 3:
            raise ValueError(
                f"Expected training views of shape (batch, n_views, *input_shape), but got {tuple(views.shape)}."
            )
        check_labels(labels, views.shape[0], self.num_classes)
        if views.shape[1] == 1 and not self.supervised:
            raise ValueError(
                "n_views=1 without labels (supervised=False) leaves every anchor without a positive: use n_views >= 2."
            )

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        views, labels = batch
        self._check_batch(views, labels)
        batch_size, n_views = views.shape[:2]
        features = self(views.flatten(0, 1))  # (B * V, feature_dim), sample-major
        projections = self.project(features).view(batch_size, n_views, -1)  # (B, V, projection_dim)
        targets = labels if self.supervised else None
        if self.queue is not None:
            queued, queued_labels = self.queue.entries()
            loss = self.criterion(
                projections, targets, queue=queued, queue_labels=queued_labels if self.supervised else None
            )
            self._enqueue(views, projections, labels)
        else:
            loss = self.criterion(projections, targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"SupCon loss is {loss.item()} at step {self.global_step}: lower the learning rate, raise the "
                "temperature, or check that the projections are normalised."
            )
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        gathering = self.criterion.gather_distributed and distributed.is_distributed()
        global_batch = batch_size * (self.trainer.world_size if gathering else 1)
        self.log("train/global_batch", float(global_batch), reduce_fx="max")
        if self.probe is not None:
            logits = self.probe(features.detach())
            probe_loss = F.cross_entropy(logits, labels.repeat_interleave(n_views))
            self.train_probe_top1(logits, labels.repeat_interleave(n_views))
            self.log("train/probe_loss", probe_loss, sync_dist=True)
            self.log("train/probe_top1", self.train_probe_top1, prog_bar=True)
            loss = loss + probe_loss
        return loss

    @torch.no_grad()
    def _enqueue(self, views: Tensor, projections: Tensor, labels: Tensor) -> None:
        """Push this step's keys (all views) into the queue: the momentum encoder's projections when there is one,
        else the detached projections; under DDP the gathered global batch, so every rank's queue is the same."""
        assert self.queue is not None
        if self.momentum_encoder is not None and self.momentum_head is not None:
            keys = self.momentum_head(self.momentum_encoder(views.flatten(0, 1)))
        else:
            keys = projections.detach().flatten(0, 1)
        keys_labels = labels.repeat_interleave(projections.shape[1])
        if self.criterion.gather_distributed and distributed.is_distributed():
            keys, keys_labels = distributed.gather(keys), distributed.gather(keys_labels)
        self.queue.push(keys, keys_labels)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Move the momentum encoder towards the online encoder (exponential moving average)."""
        if self.momentum_encoder is None or self.momentum_head is None:
            return
        momentum = self.hparams["queue_momentum"]
        with torch.no_grad():
            for online, ema in ((self.encoder, self.momentum_encoder), (self.head, self.momentum_head)):
                for p, p_ema in zip(online.parameters(), ema.parameters(), strict=True):
                    p_ema.mul_(momentum).add_(p.detach(), alpha=1.0 - momentum)
                for b, b_ema in zip(online.buffers(), ema.buffers(), strict=True):
                    b_ema.copy_(b)

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str, dataloader_idx: int) -> None:
        images, labels = batch
        features = self(images)
        if dataloader_idx == 1:  # the clean training set: kNN bank
            if self.knn is not None:
                self.knn.update(F.normalize(features, dim=1), labels, bank=True)
            return
        if self.knn is not None:
            self.knn.update(F.normalize(features, dim=1), labels, bank=False)
        if self.probe is not None:
            logits = self.probe(features)
            top1, top5 = getattr(self, f"{stage}_probe_top1"), getattr(self, f"{stage}_probe_top5")
            top1(logits, labels)
            top5(logits, labels)
            self.log(f"{stage}/probe_top1", top1, prog_bar=True, add_dataloader_idx=False)
            self.log(f"{stage}/probe_top5", top5, add_dataloader_idx=False)
        if self.supervised:
            loss = self.eval_criterion(self.project(features)[:, None], labels)
            self.log(f"{stage}/loss", loss, sync_dist=True, add_dataloader_idx=False)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "val", dataloader_idx)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "test", dataloader_idx)

    def _log_knn(self, stage: str) -> None:
        if self.knn is None:
            return
        if self.knn.bank_features and self.knn.query_features:
            result = self.knn.compute()  # already over all ranks' samples: sync_dist averages equal values
            for name, value in result.items():
                self.log(f"{stage}/knn_{name}", value, prog_bar=name == "top1", sync_dist=True)
        self.knn.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_knn("val")

    def on_test_epoch_end(self) -> None:
        self._log_knn("test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        images, labels = batch if isinstance(batch, list | tuple) else (batch, None)
        features = self(images)
        out = {"features": features, "projections": self.project(features)}
        if labels is not None:
            out["labels"] = labels
        return out

    def optimized_parameters(self) -> list[nn.Parameter]:
        probe = {id(p) for p in self.probe.parameters()} if self.probe is not None else set()
        return [p for p in self.parameters() if id(p) not in probe]

    def extra_param_groups(self) -> list[dict[str, Any]]:
        if self.probe is None:
            return []
        return [
            {
                "params": list(self.probe.parameters()),
                "lr": self.hparams["probe_lr"],
                "weight_decay": 0.0,
                "lars_exclude": True,
            }
        ]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "kind": "supcon",
            "encoder": self.encoder_name,
            "feature_dim": self.feature_dim,
            "in_channels": self.hparams.get("in_channels"),
        }
