"""Warmup + cosine and warmup + step decay schedules against per-step formulas, the batch-size scaling rules
and the optimizer factory."""

from __future__ import annotations

import itertools
import math
import pickle

import pytest
import torch
from torch import nn

from lightning_supcon.optim.schedulers import (
    WarmupCosine,
    scale_lr,
    warmup_cosine,
    warmup_step_decay,
)


def _reference_lr(step: int, base: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup (Goyal et al. 2017) to ``base``, then half a cosine period (SGDR) down to ``min_ratio * base``."""
    if step >= total:
        return base * min_ratio
    if step < warmup:
        return base * (step + 1) / warmup
    t, span = step - warmup, total - warmup
    return base * min_ratio + 0.5 * (base - base * min_ratio) * (1 + math.cos(math.pi * t / span))


def _model() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3), nn.LayerNorm(3))


class TestWarmupCosine:
    @pytest.mark.parametrize(("warmup", "total"), [(0, 10), (3, 10), (10, 10), (5, 6), (1, 1)])
    @pytest.mark.parametrize("min_ratio", [0.0, 0.1])
    def test_matches_reference_per_step(self, warmup: int, total: int, min_ratio: float) -> None:
        params = [torch.zeros(1, requires_grad=True)]
        optimizer = torch.optim.SGD([{"params": params, "lr": 0.4}], lr=0.4)
        scheduler = warmup_cosine(optimizer, warmup, total, min_lr_ratio=min_ratio)
        for step in range(total + 3):  # past the end the rate stays at the minimum
            assert optimizer.param_groups[0]["lr"] == pytest.approx(
                _reference_lr(step, 0.4, warmup, total, min_ratio), abs=1e-12
            )
            optimizer.step()
            scheduler.step()

    def test_every_group_scales_its_own_base_lr(self) -> None:
        a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}])
        scheduler = warmup_cosine(optimizer, 4, 8)
        assert scheduler.get_last_lr() == pytest.approx([0.25, 0.025])

    def test_warmup_is_monotone_and_peaks_at_base(self) -> None:
        schedule = WarmupCosine(warmup_steps=5, total_steps=20)
        factors = [schedule(step) for step in range(21)]
        assert factors[0] == pytest.approx(0.2)
        assert max(factors) == factors[4] == factors[5] == 1.0
        assert all(x >= y for x, y in itertools.pairwise(factors[5:]))
        assert factors[-1] == pytest.approx(0.0, abs=1e-12)

    def test_state_dict_keeps_the_settings(self) -> None:
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        state = warmup_cosine(optimizer, 2, 9, min_lr_ratio=0.3).state_dict()
        assert state["lr_lambdas"][0] == {"warmup_steps": 2, "total_steps": 9, "min_lr_ratio": 0.3}
        pickle.dumps(state)

    @pytest.mark.parametrize(
        ("args", "match"),
        [
            ((0, 0, 0.0), "`total_steps` to be a positive integer, but got 0"),
            ((11, 10, 0.0), r"`warmup_steps` in \[0, 10\], but got 11"),
            ((-1, 10, 0.0), r"`warmup_steps` in \[0, 10\], but got -1"),
            ((1, 10, 1.5), r"`min_lr_ratio` in \[0, 1\], but got 1.5"),
        ],
    )
    def test_rejects_bad_arguments(self, args: tuple[int, int, float], match: str) -> None:
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        with pytest.raises(ValueError, match=match):
            warmup_cosine(optimizer, *args)


def _reference_step_lr(step: int, base: float, warmup: int, milestones: list[int], rate: float) -> float:
    """Linear warmup to ``base``; the reference code's step decay: one factor ``rate`` per milestone reached."""
    lr = base
    for milestone in milestones:
        if step >= milestone:
            lr *= rate
    return lr * (step + 1) / warmup if step < warmup else lr


class TestWarmupStepDecay:
    @pytest.mark.parametrize(("warmup", "milestones"), [(0, [4, 7, 9]), (3, [4, 7, 9]), (5, [2]), (0, []), (2, [0, 0])])
    @pytest.mark.parametrize("rate", [0.2, 1.0])
    def test_matches_reference_per_step(self, warmup: int, milestones: list[int], rate: float) -> None:
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=5.0)
        scheduler = warmup_step_decay(optimizer, warmup, milestones, rate=rate)
        for step in range(12):
            expected = _reference_step_lr(step, 5.0, warmup, milestones, rate)
            assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)
            optimizer.step()
            scheduler.step()

    def test_state_dict_keeps_the_settings(self) -> None:
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        state = warmup_step_decay(optimizer, 2, [6, 8], rate=0.2).state_dict()
        assert state["lr_lambdas"][0] == {"warmup_steps": 2, "milestones": [6, 8], "rate": 0.2}
        pickle.dumps(state)

    @pytest.mark.parametrize(
        ("args", "match"),
        [
            ((-1, [3], 0.1), "`warmup_steps` >= 0, but got -1"),
            ((0, [5, 3], 0.1), r"`milestones` ascending and >= 0, but got \[5, 3\]"),
            ((0, [-1], 0.1), r"`milestones` ascending and >= 0, but got \[-1\]"),
            ((0, [3], 0.0), r"`rate` in \(0, 1\], but got 0.0"),
            ((0, [3], 1.5), r"`rate` in \(0, 1\], but got 1.5"),
        ],
    )
    def test_rejects_bad_arguments(self, args: tuple[int, list[int], float], match: str) -> None:
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        with pytest.raises(ValueError, match=match):
            warmup_step_decay(optimizer, *args)


class TestScaleLr:
    @pytest.mark.parametrize(
        ("rule", "batch", "expected"),
        [
            ("linear", 256, 0.5),
            ("linear", 1024, 2.0),
            ("linear", 64, 0.125),
            ("sqrt", 1024, 1.0),
            ("sqrt", 64, 0.25),
            ("none", 4096, 0.5),
        ],
    )
    def test_rules(self, rule: str, batch: int, expected: float) -> None:
        assert scale_lr(0.5, batch, rule=rule) == pytest.approx(expected)  # type: ignore[arg-type]

    def test_reference_batch(self) -> None:
        assert scale_lr(0.1, 512, reference_batch=128) == pytest.approx(0.4)

    def test_rejects_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match=r"`rule` to be one of \('linear', 'sqrt', 'none'\), but got 'log'"):
            scale_lr(0.1, 256, rule="log")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="`global_batch_size` to be a positive integer, but got 0"):
            scale_lr(0.1, 0)
        with pytest.raises(ValueError, match="`reference_batch` to be a positive integer, but got -1"):
            scale_lr(0.1, 8, reference_batch=-1)


def test_choice_lists_have_one_source() -> None:
    """One ``Literal`` per choice list; the tuples checked at run time are derived from it (``typing.get_args``)."""
    from typing import get_args

    from lightning_supcon.losses import options
    from lightning_supcon.models import cross_entropy, optimization
    from lightning_supcon.optim import schedulers

    assert get_args(schedulers.ScaleRule) == schedulers._SCALE_RULES
    assert optimization.Schedule.__dataclass_fields__["lr_scaling"].type == "ScaleRule"
    assert not hasattr(optimization, "ScalingRule") and not hasattr(optimization, "OptimizerName")
    assert get_args(cross_entropy.TrainViews) == cross_entropy.TRAIN_VIEWS
    for values, literal in [
        (options.CONTRAST_MODES, options.ContrastMode),
        (options.SUMMATIONS, options.Summation),
        (options.DENOMINATORS, options.Denominator),
        (options.REDUCTIONS, options.Reduction),
    ]:
        assert values == get_args(literal)
