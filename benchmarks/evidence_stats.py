"""Paired statistics of ``evidence.py``: the mean of per-seed differences with a paired-t 95% confidence interval,
and the corruption error relative to a baseline (mCE of ImageNet-C [0]).

- [0] Hendrycks and Dietterich, Benchmarking Neural Network Robustness to Common Corruptions and Perturbations,
  ICLR 2019, https://arxiv.org/abs/1903.12261 (Sec. 3: ``CE_c = sum_s E_{s,c} / sum_s E_{s,c}^{baseline}``, mCE =
  the mean of ``CE_c`` over corruptions ``c``)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

CI_METHOD = "paired t, 95%, scipy.stats.t"


@dataclass(frozen=True)
class PairedDifference:
    """The mean of ``n`` paired differences and its two-sided confidence interval ``[low, high]``."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def sign(self) -> int:
        """``1`` when the interval lies above 0, ``-1`` when below, ``0`` when it contains 0 (not settled)."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """Mean of ``a[i] - b[i]`` with the paired-t interval ``mean +- t_{n-1} s / sqrt(n)``.

    Args:
        a: One value per seed of arm A.
        b: The values of arm B for the same seeds, in the same order.
        confidence: Two-sided level of the interval.

    Returns:
        The :class:`PairedDifference`; with one pair the interval is ``(-inf, inf)`` (nothing is settled).

    Raises:
        ValueError: If ``a`` and ``b`` differ in length or are empty.

    Example:
        >>> d = paired_difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
        >>> round(d.mean, 3), round(d.low, 3), round(d.high, 3), d.sign
        (2.0, -0.484, 4.484, 0)
        >>> paired_difference([1.0, 2.0, 3.0], [0.5, 1.4, 2.6]).sign  # differences 0.5, 0.6, 0.4
        1
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"Expected two equally long, non-empty lists of paired values, but got {len(a)} and {len(b)}.")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return PairedDifference(mean, -math.inf, math.inf, 1)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(diffs) - 1)) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return PairedDifference(mean, mean - half, mean + half, len(diffs))


def relative_corruption_error(errors: Mapping[str, Sequence[float]], baseline: Mapping[str, Sequence[float]]) -> float:
    """mCE of [0] against a baseline: the mean over corruptions of ``sum_s E_s / sum_s E_s^baseline``.

    Args:
        errors: Top-1 error per severity (1..5), by corruption name.
        baseline: The baseline's errors, same keys and lengths.

    Returns:
        The ratio (1.0: as robust as the baseline; below 1: more robust).

    Raises:
        ValueError: If the keys differ or a baseline's errors sum to 0.

    Example:
        >>> errors = {"blur": [0.1, 0.2], "noise": [0.3, 0.3]}
        >>> relative_corruption_error(errors, {"blur": [0.2, 0.4], "noise": [0.3, 0.3]})  # (0.5 + 1.0) / 2
        0.75
    """
    if set(errors) != set(baseline):
        raise ValueError(f"Expected the same corruptions, but got {sorted(errors)} and {sorted(baseline)}.")
    ratios = []
    for name in errors:
        total = sum(baseline[name])
        if total == 0:
            raise ValueError(f"The baseline makes no error on {name!r}: its relative error is undefined.")
        ratios.append(sum(errors[name]) / total)
    return statistics.fmean(ratios)
