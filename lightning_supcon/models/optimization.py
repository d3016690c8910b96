"""Optimiser and learning-rate schedule of the project's LightningModules, received as two arguments.

Every LightningModule takes the same two arguments, declared here once:

- ``optimizer: OptimizerCallable | None`` -- LightningCLI's own type for optimisers: any ``torch.optim`` optimiser,
  or :class:`~lightning_supcon.optim.LARS`, chosen by ``class_path`` with its own ``init_args`` (``lr``,
  ``momentum``, ``weight_decay``, ...). ``None``: SGD with momentum 0.9 and the module's default ``lr`` and
  ``weight_decay`` (:func:`sgd`). Biases and normalisation parameters get no weight decay (SimCLR's rule [0]).
- ``schedule: Schedule = Schedule()`` -- one frozen dataclass (jsonargparse nests it as a plain group, no
  ``class_path``, and lists its fields in ``--help``) with the learning-rate scaling rule and the schedule: warmup
  then cosine (:class:`~lightning_supcon.optim.WarmupCosine`), or step decay
  (:class:`~lightning_supcon.optim.WarmupStepDecay`). Being frozen, the default instance is safe to share.

Why a dataclass and not LightningCLI's ``LRSchedulerCallable`` for the schedule: a scheduler callable receives
only the optimiser, but the schedule is written in epochs (turned into optimiser steps with the Trainer's epoch
length and run length) and the learning rate is scaled by the global batch (the DataModule's ``batch_size`` x
devices x nodes x accumulation, read from the Trainer, a common Lightning idiom). Both are known only in
``configure_optimizers``, so :meth:`Schedule.build` does them there, in one place.

In YAML::

    model:
      init_args:
        optimizer:
          class_path: torch.optim.SGD   # or lightning_supcon.optim.LARS, torch.optim.AdamW, ...
          init_args: {lr: 0.5, momentum: 0.9, weight_decay: 1.0e-4}
        schedule: {lr_scaling: linear, warmup_epochs: 10, min_lr_ratio: 0.001}

- [0] Chen et al., SimCLR, ICML 2020, https://arxiv.org/abs/2002.05709 (App. B.1)
- [1] Goyal et al., Accurate, Large Minibatch SGD, 2017, https://arxiv.org/abs/1706.02677 (scaling, warmup)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import OptimizerCallable
from pytorch_lightning.utilities import rank_zero_warn
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lightning_supcon.optim.lars import LARS
from lightning_supcon.optim.schedulers import ScaleRule, scale_lr, warmup_cosine, warmup_step_decay
from lightning_supcon.plugins import refuse_sync_batchnorm_on_cpu

__all__ = ["OptimizationMixin", "OptimizerCallable", "Schedule", "sgd"]


def sgd(lr: float, weight_decay: float, momentum: float = 0.9) -> OptimizerCallable:
    """The default optimiser of a module: ``torch.optim.SGD`` with these settings, as an ``OptimizerCallable``.

    Example:
        >>> make = sgd(lr=0.1, weight_decay=1e-4)
        >>> make([torch.zeros(2, requires_grad=True)]).defaults["momentum"]
        0.9
    """
    return functools.partial(torch.optim.SGD, lr=lr, momentum=momentum, weight_decay=weight_decay)


@dataclass(frozen=True)
class Schedule:
    """Learning-rate scaling and schedule, stepped once per optimiser step.

    Args:
        lr_scaling: Scale the optimiser's learning rate by the global batch: ``"linear"``: ``lr * batch / 256``
            [1]; ``"sqrt"``: ``lr * sqrt(batch / 256)`` [0]; ``"none"``. Extra parameter groups of a module (e.g.
            the online probe) keep their own learning rate.
        warmup_epochs: Linear warmup length in epochs (fractions allowed); then cosine decay, or step decay.
        min_lr_ratio: Final learning rate of the cosine as a fraction of the peak.
        lr_decay_epochs: Step decay instead of cosine: the learning rate is multiplied by ``lr_decay_rate`` after
            each of these epochs (the reference code's default schedule, e.g. ``[60, 75, 90]`` with rate 0.2 for
            the linear stage); ``None``: cosine.
        lr_decay_rate: The factor of each step decay, in ``(0, 1]``.

    Raises:
        ValueError: For milestones that are negative or not ascending, a rate outside ``(0, 1]``, or a
            ``min_lr_ratio`` (which belongs to the cosine) together with step decay.

    Example:
        >>> Schedule(warmup_epochs=10, min_lr_ratio=0.001).lr_decay_epochs is None
        True
        >>> Schedule(lr_decay_epochs=[3, 1])
        Traceback (most recent call last):
        ...
        ValueError: Expected `lr_decay_epochs` ascending and >= 0, but got [3, 1].
    """

    lr_scaling: ScaleRule = "none"
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    lr_decay_epochs: list[float] | None = None
    lr_decay_rate: float = 0.1

    def __post_init__(self) -> None:
        if self.warmup_epochs < 0:
            raise ValueError(f"Expected `warmup_epochs` >= 0, but got {self.warmup_epochs}.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"Expected `min_lr_ratio` in [0, 1], but got {self.min_lr_ratio}.")
        if self.lr_decay_epochs is None:
            return
        epochs = list(self.lr_decay_epochs)
        if epochs != sorted(epochs) or any(e < 0 for e in epochs):
            raise ValueError(f"Expected `lr_decay_epochs` ascending and >= 0, but got {epochs}.")
        if not 0 < self.lr_decay_rate <= 1:
            raise ValueError(f"Expected `lr_decay_rate` in (0, 1], but got {self.lr_decay_rate}.")
        if self.min_lr_ratio != 0:
            raise ValueError(
                f"`min_lr_ratio` ({self.min_lr_ratio}) sets the end of the cosine schedule; with step decay "
                f"(`lr_decay_epochs`) leave it at 0."
            )

    def scale(self, optimizer: Optimizer, trainer: pl.Trainer) -> None:
        """Scale the learning rate of every group of ``optimizer`` by the global batch, per ``lr_scaling``."""
        if self.lr_scaling == "none":
            return
        factor = scale_lr(1.0, global_batch_size(trainer), rule=self.lr_scaling)
        for group in optimizer.param_groups:
            group["lr"] *= factor
        optimizer.defaults["lr"] *= factor

    def build(self, optimizer: Optimizer, trainer: pl.Trainer) -> LambdaLR:
        """The per-step scheduler of ``optimizer`` for ``trainer``'s run: epochs turned into optimiser steps."""
        total_steps = max(1, int(trainer.estimated_stepping_batches))
        steps_per_epoch = optimizer_steps_per_epoch(trainer, total_steps)
        warmup_steps = min(total_steps, math.ceil(self.warmup_epochs * steps_per_epoch))
        if self.lr_decay_epochs is None:
            return warmup_cosine(optimizer, warmup_steps, total_steps, min_lr_ratio=self.min_lr_ratio)
        # milestones in epochs: the same steps whatever the run length, so a resume needs no check
        milestones = [math.ceil(epoch * steps_per_epoch) for epoch in self.lr_decay_epochs]
        return warmup_step_decay(optimizer, warmup_steps, milestones, rate=self.lr_decay_rate)


def global_batch_size(trainer: pl.Trainer) -> int:
    """Samples per optimiser step over all processes: per-device batch x devices x nodes x accumulation.

    Raises:
        ValueError: When the DataModule has no integer ``batch_size`` attribute.
    """
    datamodule = getattr(trainer, "datamodule", None)
    batch = getattr(datamodule, "batch_size", None)
    if not isinstance(batch, int):
        raise ValueError(
            "Scaling the learning rate by the global batch needs a DataModule with an integer `batch_size`; "
            "use `schedule.lr_scaling: none` otherwise."
        )
    return batch * trainer.world_size * trainer.accumulate_grad_batches


def optimizer_steps_per_epoch(trainer: pl.Trainer, total_steps: int) -> float:
    """Optimiser steps in one epoch, to turn ``warmup_epochs`` and ``lr_decay_epochs`` into steps.

    From the training batches of an epoch (after ``limit_train_batches``) and the accumulation, which
    ``estimated_stepping_batches`` has set up, so a run cut short by ``max_steps`` keeps epoch-sized epochs. When the
    epoch length is unknown (``max_epochs=-1`` or an iterable data set) the whole run counts as one epoch.
    """
    batches = trainer.num_training_batches
    if math.isfinite(batches) and batches > 0:
        return float(math.ceil(batches / trainer.accumulate_grad_batches))
    max_epochs = trainer.max_epochs
    return total_steps / max_epochs if max_epochs and max_epochs > 0 else float(total_steps)


def decay_groups(parameters: Iterable[nn.Parameter]) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: weights (the optimiser's weight decay) and tensors with ``ndim <= 1``
    (biases, normalisation scales and shifts: ``weight_decay=0``, and LARS leaves them unadapted) [0]."""
    trainable = [p for p in parameters if p.requires_grad]
    groups: list[dict[str, Any]] = [
        {"params": [p for p in trainable if p.ndim > 1]},
        {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


class OptimizationMixin(pl.LightningModule):
    """``configure_optimizers`` from ``self.optimizer`` (an ``OptimizerCallable``) and ``self.schedule`` (a
    :class:`Schedule`), shared by the project's LightningModules; they set both in ``__init__``."""

    optimizer: OptimizerCallable
    schedule: Schedule

    def optimized_parameters(self) -> list[nn.Parameter]:
        """Parameters under the main learning rate, split by :func:`decay_groups`."""
        return list(self.parameters())

    def extra_param_groups(self) -> list[dict[str, Any]]:
        """Further parameter groups with their own settings (e.g. an online probe's learning rate); the key
        ``lars_exclude`` is kept for LARS only."""
        return []

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        groups = decay_groups(self.optimized_parameters())
        if not groups:
            raise ValueError("Expected at least one parameter with `requires_grad=True`, but got none.")
        optimizer = self.optimizer(groups)
        self.schedule.scale(optimizer, self.trainer)
        for group in self.extra_param_groups():
            if not isinstance(optimizer, LARS):
                group = {key: value for key, value in group.items() if key != "lars_exclude"}
            optimizer.add_param_group(group)
        scheduler = self.schedule.build(optimizer, self.trainer)
        self._planned_total_steps = getattr(scheduler.lr_lambdas[0], "total_steps", None)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_fit_start(self) -> None:
        """Refuse PyTorch's ``SyncBatchNorm`` on CPU before the first step, with the fix (it raises mid-step)."""
        refuse_sync_batchnorm_on_cpu(self)

    def on_train_start(self) -> None:
        """Warn when a resumed schedule was planned for another run length (e.g. a larger ``max_epochs``): the
        restored warmup + cosine keeps its old length, so past its end the learning rate stays at its minimum."""
        planned = getattr(self, "_planned_total_steps", None)
        for config in self.trainer.lr_scheduler_configs:
            restored = getattr(getattr(config.scheduler, "lr_lambdas", [None])[0], "total_steps", None)
            if planned is not None and restored is not None and restored != planned:
                rank_zero_warn(
                    f"The learning-rate schedule restored from the checkpoint spans {restored} steps, but this run "
                    f"has {planned}: the learning rate follows the checkpoint's schedule (and stays at its minimum "
                    "after its end). Resume with the original max_epochs, or start a new run from the weights."
                )
