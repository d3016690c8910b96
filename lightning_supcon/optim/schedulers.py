"""Learning-rate schedule and batch-size scaling rule for contrastive pre-training (the optimiser itself is
injected: :class:`~lightning_supcon.models.optimization.OptimizationMixin`).

- [0] Goyal et al., Accurate, Large Minibatch SGD, 2017, https://arxiv.org/abs/1706.02677 (linear scaling, warmup)
- [1] Loshchilov & Hutter, SGDR, ICLR 2017, https://arxiv.org/abs/1608.03983 (cosine annealing)
- [2] Chen et al., SimCLR, ICML 2020, https://arxiv.org/abs/2002.05709 (App. B.1: ``lr = 0.3 x batch / 256``
  or ``0.075 x sqrt(batch)``; LARS without weight decay on biases and batch-norm parameters)
- [3] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362 (its reference
  code decays the learning rate in steps by default, e.g. x0.2 after epochs 60, 75 and 90 of the linear stage)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lightning_supcon.utils.checks import check_positive_integers

ScaleRule = Literal["linear", "sqrt", "none"]
_SCALE_RULES: tuple[str, ...] = get_args(ScaleRule)


class WarmupCosine:
    """The multiplier of each group's base learning rate for linear warmup [0] then cosine decay [1].

    At the 0-based optimizer step ``t`` it is ``(t + 1) / warmup_steps`` during the first ``warmup_steps`` steps (so
    the first step uses ``base_lr / warmup_steps``, the last warmup step the full ``base_lr``), then
    ``min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * p)) / 2`` with
    ``p = (t - warmup_steps) / (total_steps - warmup_steps)``, reaching ``min_lr_ratio`` at ``total_steps`` and
    staying there. A callable object rather than a closure, so ``LambdaLR.state_dict`` saves its settings.

    Args:
        warmup_steps: Steps of linear warmup, in ``[0, total_steps]``.
        total_steps: Steps of the whole schedule, > 0.
        min_lr_ratio: Final learning rate as a fraction of the base one, in ``[0, 1]``.

    Raises:
        ValueError: For arguments out of range.

    Example:
        >>> multiplier = WarmupCosine(warmup_steps=2, total_steps=6)
        >>> [round(multiplier(step), 3) for step in range(7)]
        [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> None:
        check_positive_integers(total_steps=total_steps)
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"Expected argument `warmup_steps` in [0, {total_steps}], but got {warmup_steps}")
        if not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"Expected argument `min_lr_ratio` in [0, 1], but got {min_lr_ratio}")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        """The multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
        if step >= self.total_steps:
            return self.min_lr_ratio
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupStepDecay:
    """The multiplier of each group's base learning rate for linear warmup [0] then step decay [3].

    At the 0-based optimizer step ``t`` it is the warmup factor of :class:`WarmupCosine` (``(t + 1) / warmup_steps``
    while ``t < warmup_steps``, else 1) times ``rate ** (number of milestones <= t)``. A callable object rather than
    a closure, so ``LambdaLR.state_dict`` saves its settings.

    Args:
        warmup_steps: Steps of linear warmup, >= 0.
        milestones: Ascending 0-based steps from which one more factor ``rate`` applies.
        rate: The factor of each decay, in ``(0, 1]``.

    Raises:
        ValueError: For arguments out of range.

    Example:
        >>> multiplier = WarmupStepDecay(warmup_steps=2, milestones=[3, 5], rate=0.2)
        >>> [round(multiplier(step), 3) for step in range(7)]
        [0.5, 1.0, 1.0, 0.2, 0.2, 0.04, 0.04]
    """

    def __init__(self, warmup_steps: int, milestones: Sequence[int], rate: float = 0.1) -> None:
        if warmup_steps < 0:
            raise ValueError(f"Expected argument `warmup_steps` >= 0, but got {warmup_steps}")
        if list(milestones) != sorted(milestones) or any(m < 0 for m in milestones):
            raise ValueError(f"Expected argument `milestones` ascending and >= 0, but got {list(milestones)}")
        if not 0 < rate <= 1:
            raise ValueError(f"Expected argument `rate` in (0, 1], but got {rate}")
        self.warmup_steps = warmup_steps
        self.milestones = list(milestones)
        self.rate = rate

    def __call__(self, step: int) -> float:
        """The multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
        warmup = (step + 1) / self.warmup_steps if step < self.warmup_steps else 1.0
        return warmup * self.rate ** sum(step >= m for m in self.milestones)


def warmup_step_decay(
    optimizer: Optimizer, warmup_steps: int, milestones: Sequence[int], rate: float = 0.1
) -> LambdaLR:
    """``LambdaLR(optimizer, WarmupStepDecay(warmup_steps, milestones, rate))``: linear warmup, then step decay of
    each group's learning rate (arguments, multipliers and ``ValueError`` of :class:`WarmupStepDecay`).

    Step it once per optimizer step (in Lightning, return it with ``"interval": "step"``).

    Example:
        >>> import torch
        >>> optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
        >>> scheduler = warmup_step_decay(optimizer, warmup_steps=2, milestones=[3, 5], rate=0.2)
        >>> for _ in range(3):
        ...     optimizer.step()
        ...     scheduler.step()
        >>> scheduler.get_last_lr()  # step 3: the full rate once, times 0.2
        [0.1]
    """
    return LambdaLR(optimizer, WarmupStepDecay(warmup_steps, milestones, rate))


def warmup_cosine(optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> LambdaLR:
    """``LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, min_lr_ratio))``: linear warmup [0], then
    cosine decay [1] of each group's learning rate (arguments, multipliers and ``ValueError`` of
    :class:`WarmupCosine`).

    Step it once per optimizer step (in Lightning, return it with ``"interval": "step"``).

    Example:
        >>> import torch
        >>> optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
        >>> scheduler = warmup_cosine(optimizer, warmup_steps=2, total_steps=6)
        >>> scheduler.get_last_lr()  # step 0: half the warmup
        [1.0]
    """
    return LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, min_lr_ratio))


def scale_lr(base_lr: float, global_batch_size: int, rule: ScaleRule = "linear", reference_batch: int = 256) -> float:
    """Scale a learning rate tuned for ``reference_batch`` to the global batch size [0, 2].

    Args:
        base_lr: Learning rate at ``reference_batch``.
        global_batch_size: Samples per optimizer step over all processes (and accumulated batches).
        rule: ``"linear"``: ``base_lr * B / ref``; ``"sqrt"``: ``base_lr * sqrt(B / ref)``; ``"none"``: ``base_lr``.
        reference_batch: The batch size ``base_lr`` is given for.

    Returns:
        The scaled learning rate.

    Raises:
        ValueError: For an unknown ``rule`` or a batch size that is not positive.

    Example:
        >>> scale_lr(0.3, 4096)
        4.8
        >>> scale_lr(0.3, 1024, rule="sqrt")
        0.6
    """
    if rule not in _SCALE_RULES:
        raise ValueError(f"Expected argument `rule` to be one of {_SCALE_RULES}, but got {rule!r}")
    check_positive_integers(global_batch_size=global_batch_size, reference_batch=reference_batch)
    if rule == "linear":
        return base_lr * global_batch_size / reference_batch
    if rule == "sqrt":
        return base_lr * math.sqrt(global_batch_size / reference_batch)
    return base_lr
