"""Optimizers and learning-rate schedules: LARS, warmup + cosine or step decay, batch-size scaling, an optimizer
factory."""

from lightning_supcon.optim.lars import LARS
from lightning_supcon.optim.schedulers import (
    OptimizerName,
    ScaleRule,
    WarmupCosine,
    WarmupStepDecay,
    build_optimizer,
    scale_lr,
    warmup_cosine,
    warmup_step_decay,
)

__all__ = [
    "LARS",
    "OptimizerName",
    "ScaleRule",
    "WarmupCosine",
    "WarmupStepDecay",
    "build_optimizer",
    "scale_lr",
    "warmup_cosine",
    "warmup_step_decay",
]
