"""Optimizers and learning-rate schedules: LARS, warmup + cosine or step decay, batch-size scaling."""

from lightning_supcon.optim.lars import LARS
from lightning_supcon.optim.schedulers import (
    ScaleRule,
    WarmupCosine,
    WarmupStepDecay,
    scale_lr,
    warmup_cosine,
    warmup_step_decay,
)

__all__ = [
    "LARS",
    "ScaleRule",
    "WarmupCosine",
    "WarmupStepDecay",
    "scale_lr",
    "warmup_cosine",
    "warmup_step_decay",
]
