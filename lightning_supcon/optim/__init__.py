"""Optimizers and learning-rate schedules: LARS, warmup + cosine, batch-size scaling, an optimizer factory."""

from lightning_supcon.optim.lars import LARS
from lightning_supcon.optim.schedulers import WarmupCosine, build_optimizer, scale_lr, warmup_cosine

__all__ = ["LARS", "WarmupCosine", "build_optimizer", "scale_lr", "warmup_cosine"]
