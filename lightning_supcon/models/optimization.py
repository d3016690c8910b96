"""Optimiser and schedule shared by the LightningModules: SGD/LARS/AdamW/RMSProp, warmup then cosine, per step.

The learning rate can be scaled by the global batch (``devices x nodes x per-device batch x accumulation``),
linearly (Goyal et al. 2017) or by the square root, as in the SupCon/SimCLR reference recipes.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch import nn

from lightning_supcon.optim.schedulers import build_optimizer, scale_lr, warmup_cosine, warmup_step_decay

OptimizerName = Literal["sgd", "lars", "adamw", "rmsprop"]
ScalingRule = Literal["none", "linear", "sqrt"]


def check_schedule(lr_decay_epochs: list[float] | None, lr_decay_rate: float, min_lr_ratio: float) -> None:
    """Validate the schedule arguments of a LightningModule at construction.

    Raises:
        ValueError: For milestones that are negative or not ascending, a rate outside ``(0, 1]``, or a
            ``min_lr_ratio`` (which belongs to the cosine schedule) together with step decay.
    """
    if lr_decay_epochs is None:
        return
    if list(lr_decay_epochs) != sorted(lr_decay_epochs) or any(e < 0 for e in lr_decay_epochs):
        raise ValueError(f"Expected `lr_decay_epochs` ascending and >= 0, but got {list(lr_decay_epochs)}.")
    if not 0 < lr_decay_rate <= 1:
        raise ValueError(f"Expected `lr_decay_rate` in (0, 1], but got {lr_decay_rate}.")
    if min_lr_ratio != 0:
        raise ValueError(
            f"`min_lr_ratio` ({min_lr_ratio}) sets the end of the cosine schedule; with step decay "
            f"(`lr_decay_epochs`) leave it at 0."
        )


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
            "use `lr_scaling: none` otherwise."
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


class OptimizationMixin(pl.LightningModule):
    """``configure_optimizers`` from the hyperparameters ``optimizer``, ``lr``, ``lr_scaling``, ``momentum``,
    ``weight_decay``, ``warmup_epochs``, ``min_lr_ratio``, ``lr_decay_epochs`` and ``lr_decay_rate``, shared by
    the project's LightningModules: warmup, then cosine decay, or step decay when ``lr_decay_epochs`` is set."""

    def optimized_parameters(self) -> list[nn.Parameter]:
        """Parameters under the main learning rate; biases and norm layers get no weight decay (and no LARS
        adaptation), see :func:`~lightning_supcon.optim.build_optimizer`."""
        return list(self.parameters())

    def extra_param_groups(self) -> list[dict[str, Any]]:
        """Further parameter groups with their own settings (e.g. an online probe's learning rate)."""
        return []

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        hp = self.hparams
        lr = hp["lr"]
        if hp["lr_scaling"] != "none":
            lr = scale_lr(lr, global_batch_size(self.trainer), rule=hp["lr_scaling"])
        optimizer = build_optimizer(
            self.optimized_parameters(),
            name=hp["optimizer"],
            lr=lr,
            momentum=hp["momentum"],
            weight_decay=hp["weight_decay"],
        )
        for group in self.extra_param_groups():
            if hp["optimizer"] != "lars":
                group = {key: value for key, value in group.items() if key != "lars_exclude"}
            optimizer.add_param_group(group)
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = optimizer_steps_per_epoch(self.trainer, total_steps)
        warmup_steps = min(total_steps, math.ceil(hp["warmup_epochs"] * steps_per_epoch))
        decay_epochs = hp.get("lr_decay_epochs")
        self._planned_total_steps: int | None = None
        if decay_epochs is None:
            scheduler = warmup_cosine(optimizer, warmup_steps, total_steps, min_lr_ratio=hp["min_lr_ratio"])
            self._planned_total_steps = total_steps
        else:  # milestones in epochs: the same steps whatever the run length, so a resume needs no check
            milestones = [math.ceil(epoch * steps_per_epoch) for epoch in decay_epochs]
            scheduler = warmup_step_decay(optimizer, warmup_steps, milestones, rate=hp["lr_decay_rate"])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_fit_start(self) -> None:
        """Refuse PyTorch's ``SyncBatchNorm`` on CPU before the first step, with the fix (it raises mid-step)."""
        if self.device.type == "cpu" and any(isinstance(m, nn.SyncBatchNorm) and m.training for m in self.modules()):
            raise ValueError(
                "`sync_batchnorm: true` converts BatchNorm layers to PyTorch's SyncBatchNorm, which runs on GPUs "
                "only. On CPU processes set `sync_batchnorm: false` and add the plugin "
                "`lightning_supcon.plugins.GlobalBatchNormSync` (as configs/trainer/ddp_cpu.yaml does)."
            )

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
