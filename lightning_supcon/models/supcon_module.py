"""SupConModule: encoder + projection head trained with an injected SupCon loss, evaluated online.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [1] Gao et al., Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup, 2021,
  https://arxiv.org/abs/2101.06983
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_supcon.losses import SupConLoss
from lightning_supcon.models.class_positives import anchors_with_class_positives
from lightning_supcon.models.encoder_checkpoint import EncoderCheckpointMixin
from lightning_supcon.models.evaluation_hooks import OnlineEvaluationHooks
from lightning_supcon.models.gradient_cache import cached_forward, micro_batched
from lightning_supcon.models.hparams import as_record, save_hparams
from lightning_supcon.models.labels import check_labels
from lightning_supcon.models.online_eval import OnlineEval, OnlineEvaluation, is_headline
from lightning_supcon.models.optimization import OptimizationMixin, Schedule, sgd
from lightning_supcon.nets.encoders import encoder_name, resolve_encoder
from lightning_supcon.nets.heads import HeadKind, ProjectionHead
from lightning_supcon.nets.queue import MemoryQueue, MomentumEncoder, Queue
from lightning_supcon.utils import distributed


class SupConModule(OptimizationMixin, EncoderCheckpointMixin, OnlineEvaluationHooks, pl.LightningModule):
    """Supervised contrastive pretraining (stage 1 of [0]) with online evaluation.

    Batches are ``(views, labels)`` with ``views`` of shape ``(batch, n_views, *input_shape)``: augmentation belongs
    to the DataModule, so a plain DataLoader of ready-made views works too. ``labels`` are class labels ``(batch,)``,
    ``-1`` for a sample of unknown class (its own views are its only positives; probe and kNN leave it out), or
    multi-hot ``(batch, num_classes)`` with ``multilabel``. Under DDP the loss contrasts local
    anchors with the features of every rank (the loss's ``gather_distributed=True``), with exact gradients.

    Online evaluation (:class:`~lightning_supcon.models.online_eval.OnlineEvaluation`), from the first epoch: a
    linear probe trained on detached encoder features (``val/probe_top1``), and weighted kNN of validation features
    against clean training features (``val/knn_top1``; the bank is the DataModule's ``train_eval_dataloader()``,
    encoded at the end of each evaluation epoch, see :mod:`lightning_supcon.utils.bank`); with a DataModule that has
    an out-of-distribution split, the kNN OOD metrics against the same bank (``val/ood_auroc``, ``val/ood_fpr95``,
    ...). ``val/loss`` is the loss of each clean evaluation batch (one view per sample), contrasted within its
    process also under DDP.

    Args:
        encoder: A built-in name (``"small_cnn"``, ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"``),
            a library name (``"torchvision/<name>"``, ``"timm/<name>"``; with options, a
            :class:`~lightning_supcon.nets.Backbone` by ``class_path``: ``pretrained``, ``weights``, ``cifar_stem``)
            or any ``nn.Module`` mapping inputs to ``(batch, feature_dim)`` features (no lazy modules: DDP).
        feature_dim: Size of the encoder's features; inferred for built-ins and modules with a ``feature_dim``
            attribute, required otherwise.
        in_channels: Image channels for built-in encoders (linked from the DataModule by the CLI).
        num_classes: Classes of the online probe and kNN, or labels per sample with ``multilabel`` (linked from the
            DataModule by the CLI).
        projection_dim: Output size of the projection head (the paper: 128).
        projection_head: ``"mlp"`` (hidden size = feature_dim, as in the paper) or ``"linear"``.
        loss: The contrastive loss, with its options (temperature, summation, ``gather_distributed``, ...);
            ``None``: ``SupConLoss()`` (temperature 0.1, Eq. 2, global batch under DDP). Evaluation batches use the
            same loss without the all-gather.
        supervised: Use labels; ``False`` trains SimCLR (each sample its own class) on the same data.
        online: The online evaluation (:class:`~lightning_supcon.models.online_eval.OnlineEval`: ``probe``,
            ``probe_lr``, ``knn_k``, ``knn_temperature``, ``knn_bank_dtype``, ``retrieval``, ``ood_k``;
            ``online: {knn_k: 0}`` in a config).
        ce_weight: ``0``: the probe reads detached features (evaluation only). ``> 0``: the probe is a classifier
            trained jointly with the encoder, its cross-entropy's gradient reaching it: the training loss is
            ``SupCon + ce_weight x CE`` (logged ``train/loss``, ``train/ce_loss``, ``train/total_loss``): the
            ``stage_1_cross_entropy_loss_weight`` of the TensorFlow code of [0]. Needs ``online.probe``.
        multilabel: Labels are multi-hot ``(batch, num_classes)`` (linked from a multi-label DataModule by the
            CLI): the loss weighs pairs by their label overlap (its ``multilabel`` option), the probe and kNN are
            rated by mAP and F1 (see :mod:`lightning_supcon.models.labels`). Not with a queue.
        optimizer: Any ``torch.optim`` optimiser or ``lightning_supcon.optim.LARS`` (LightningCLI's
            ``OptimizerCallable``); ``None``: SGD, lr 0.05, momentum 0.9, weight decay 1e-4. Biases and norm layers
            get no weight decay. See :mod:`lightning_supcon.models.optimization`.
        schedule: Learning-rate scaling by the global batch, warmup, cosine or step decay (default: no scaling, no
            warmup, cosine to 0).
        queue: A memory queue (:class:`~lightning_supcon.nets.queue.Queue`: ``size``, ``momentum``; ``queue: {size:
            4096, momentum: 0.99}`` in a config): every anchor is contrasted with batch + queue (for small batches);
            under DDP the gathered global batch is enqueued; entries carry no gradient. ``None``: no queue.
        channels_last: Convert the encoder to channels-last memory format (faster convolutions on GPUs).
        compile_encoder: ``torch.compile`` the encoder.
        micro_batch: Gradient caching [1]: embed the per-device batch ``micro_batch`` samples (with their views) at
            a time, so activations are held for one micro-batch, while every anchor is still contrasted with the
            whole (gathered) batch and the gradient is the full batch's, exactly (see
            :mod:`~lightning_supcon.models.gradient_cache`: about one extra forward pass; BatchNorm normalises each
            micro-batch by its own statistics). ``None``: off. Lightning's ``accumulate_grad_batches`` cannot enlarge
            the contrast set (each batch would be contrasted with itself only) and is refused for this module:
            raise the batch size and set ``micro_batch`` instead.

    Raises:
        ValueError: For ``num_classes < 2``, a negative ``ce_weight`` or one without probe, or a queue with
            ``multilabel``, or ``micro_batch < 1``; at fit start, ``accumulate_grad_batches > 1`` or a
            ``micro_batch`` larger than the DataModule's ``batch_size``.

    Example:
        >>> model = SupConModule(encoder="small_cnn", in_channels=1, loss=SupConLoss(temperature=0.2))
        >>> model.criterion.temperature, model.project(model(torch.randn(2, 1, 16, 16))).shape
        (0.2, torch.Size([2, 128]))
    """

    checkpoint_kind = "supcon"

    def __init__(
        self,
        encoder: nn.Module | str = "small_cnn",
        feature_dim: int | None = None,
        in_channels: int = 3,
        num_classes: int = 10,
        projection_dim: int = 128,
        projection_head: HeadKind = "mlp",
        loss: SupConLoss | None = None,
        supervised: bool = True,
        online: OnlineEval = OnlineEval(),  # frozen, as schedule
        ce_weight: float = 0.0,
        multilabel: bool = False,
        optimizer: OptimizerCallable | None = None,
        schedule: Schedule = Schedule(),  # frozen: a safe default, and jsonargparse shows its fields in --help
        queue: Queue | None = None,
        channels_last: bool = False,
        compile_encoder: bool = False,
        micro_batch: int | None = None,
    ) -> None:
        super().__init__()
        online = as_record(online, OnlineEval) or OnlineEval()
        queue = as_record(queue, Queue)
        schedule = as_record(schedule, Schedule) or Schedule()
        if not ce_weight >= 0:
            raise ValueError(f"Expected `ce_weight` >= 0 (0: a detached probe), but got {ce_weight}.")
        if ce_weight > 0 and not online.probe:
            raise ValueError(
                f"`ce_weight` ({ce_weight}) trains the probe jointly with the encoder: set `online.probe: true`."
            )
        if multilabel and queue is not None:
            raise ValueError("The memory queue holds class labels: leave `queue` out with `multilabel=True`.")
        if micro_batch is not None and micro_batch < 1:
            raise ValueError(
                f"Expected `micro_batch` >= 1 (samples per forward pass) or None (off), but got {micro_batch}."
            )
        self.micro_batch = micro_batch
        self.criterion = loss if loss is not None else SupConLoss()
        self.optimizer = optimizer if optimizer is not None else sgd(lr=0.05, weight_decay=1e-4)
        self.schedule = schedule
        save_hparams(
            self,
            encoder,
            loss=self.criterion,
            optimizer=self.optimizer,
            schedule=self.schedule,
            online=online,
            queue=queue,
        )
        self.encoder, self.feature_dim = resolve_encoder(encoder, in_channels, feature_dim)
        self.encoder_name = encoder_name(encoder)
        self.head = ProjectionHead(self.feature_dim, projection_dim, kind=projection_head)
        self.online = OnlineEvaluation.of(online, self.feature_dim, num_classes, multilabel)
        self.num_classes = num_classes
        self.multilabel = multilabel
        self.ce_weight = ce_weight
        self.supervised = supervised
        self.queue = MemoryQueue(queue.size, projection_dim) if queue is not None else None
        self.momentum_encoder = (
            MomentumEncoder(self.encoder, self.head, queue.momentum)
            if queue is not None and queue.momentum is not None
            else None
        )
        self.channels_last = channels_last
        if channels_last:
            self.encoder = self.encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._compile_encoder = compile_encoder

    def configure_model(self) -> None:
        if self._compile_encoder and not isinstance(self.encoder, torch._dynamo.eval_frame.OptimizedModule):
            self.encoder = torch.compile(self.encoder)  # type: ignore[assignment]

    def forward(self, images: Tensor) -> Tensor:
        """Encoder features ``(batch, feature_dim)`` of images ``(batch, *input_shape)``."""
        if self.channels_last and images.dim() == 4:
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
        check_labels(labels, views.shape[0], self.num_classes, self.multilabel, allow_unknown=True)
        if views.shape[1] == 1 and not self.supervised:
            raise ValueError(
                "n_views=1 without labels (supervised=False) leaves every anchor without a positive: use n_views >= 2."
            )

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        views, labels = batch
        self._check_batch(views, labels)
        batch_size, n_views = views.shape[:2]
        if self.micro_batch is None:
            features = self(views.flatten(0, 1))  # (B * V, feature_dim), sample-major
            projections = self.project(features).view(batch_size, n_views, -1)  # (B, V, projection_dim)
        else:  # the same graph, its activations recomputed one micro-batch at a time in the backward pass
            features, flat = cached_forward(self._embed, views, self.micro_batch, (self.encoder, self.head))
            projections = flat.view(batch_size, n_views, -1)
        targets = labels if self.supervised else None
        queued = None
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
        contrasted = distributed.gather(labels) if gathering else labels  # the labels the loss contrasts
        global_batch = contrasted.shape[0]  # ragged last batches: the sum of the ranks' sizes
        self.log("train/global_batch", float(global_batch), reduce_fx="max")
        # What each anchor is contrasted with: every other view of the (gathered) batch, and the queue.
        contrast_size = global_batch * n_views - 1 + (0 if queued is None else queued.shape[0])
        self.log("train/contrast_size", float(contrast_size), reduce_fx="max")
        positives = anchors_with_class_positives(contrasted) if self.supervised else torch.zeros((), device=self.device)
        self.log("train/anchors_with_class_positives", positives, sync_dist=True)
        # With ce_weight > 0 the probe is a classifier trained jointly: its gradient reaches the encoder.
        probe_loss = self.online.training_step(features, labels.repeat_interleave(n_views, dim=0), not self.ce_weight)
        if probe_loss is None:
            return loss
        self.log_dict(self.online.train_metrics, prog_bar=True)
        if self.ce_weight:
            loss = loss + self.ce_weight * probe_loss
            self.log("train/ce_loss", probe_loss, sync_dist=True)
            self.log("train/total_loss", loss, sync_dist=True)
            return loss
        self.log("train/probe_loss", probe_loss, sync_dist=True)
        return loss + probe_loss

    def _embed(self, views: Tensor) -> tuple[Tensor, Tensor]:
        """Features ``(m * V, feature_dim)`` and projections ``(m * V, projection_dim)`` of views ``(m, V, ...)``."""
        features = self(views.flatten(0, 1))
        return features, self.project(features)

    def on_fit_start(self) -> None:
        """Refuse, before the first step, settings that cannot give the contrast set they promise."""
        super().on_fit_start()
        if self._trainer is None:  # called by hand
            return
        accumulate = self._trainer.accumulate_grad_batches
        if accumulate > 1:
            raise ValueError(
                f"accumulate_grad_batches={accumulate} contrasts each batch only with itself: use a {accumulate}x "
                "larger data batch_size with `micro_batch` (the old batch size) for one large contrast set instead."
            )
        batch = getattr(getattr(self._trainer, "datamodule", None), "batch_size", None)
        if self.micro_batch is not None and isinstance(batch, int) and self.micro_batch > batch:
            raise ValueError(
                f"`micro_batch` ({self.micro_batch}) is larger than the batch ({batch}): set it to at most {batch}."
            )

    @torch.no_grad()
    def _enqueue(self, views: Tensor, projections: Tensor, labels: Tensor) -> None:
        """Push this step's keys (all views) into the queue: the momentum encoder's projections when there is one,
        else the detached projections; under DDP the gathered global batch, so every rank's queue is the same."""
        assert self.queue is not None
        if self.momentum_encoder is not None:
            flat, chunk = views.flatten(0, 1), views.shape[1] * (self.micro_batch or views.shape[0])
            keys = micro_batched(self.momentum_encoder, flat, chunk)
        else:
            keys = projections.detach().flatten(0, 1)
        keys_labels = labels.repeat_interleave(projections.shape[1])
        if self.criterion.gather_distributed and distributed.is_distributed():
            keys, keys_labels = distributed.gather(keys), distributed.gather(keys_labels)
        self.queue.push(keys, keys_labels)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Move the momentum encoder towards the online encoder (exponential moving average)."""
        if self.momentum_encoder is not None:
            self.momentum_encoder.update(self.encoder, self.head)

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        images, labels = batch
        features = self(images)
        metrics = self.online.eval_step(features, labels, stage)
        if metrics is not None:
            for name, metric in metrics.items(keep_base=False):
                self.log(name, metric, prog_bar=is_headline(name))
        if self.supervised:
            # Within each process: under DDP the ranks may run different numbers of evaluation batches (every
            # sample once, no padding), so an evaluation step must hold no collective.
            loss = self.criterion(self.project(features)[:, None], labels, gather_distributed=False)
            self.log(f"{stage}/loss", loss, sync_dist=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def encode(self, images: Tensor) -> Tensor:
        return self(images)

    def prediction_heads(self, features: Tensor) -> dict[str, Tensor]:
        return {"projections": self.project(features)}

    def optimized_parameters(self) -> list[nn.Parameter]:
        probe = {id(p) for p in self.online.parameters()}
        return [p for p in self.parameters() if id(p) not in probe]

    def extra_param_groups(self) -> list[dict[str, Any]]:
        return self.online.param_groups()
