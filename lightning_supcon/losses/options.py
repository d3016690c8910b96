"""The options of the SupCon loss as one record: their types, the allowed values (one source: the ``Literal``), one
validation.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [1] Zhu et al., Balanced Contrastive Learning for Long-Tailed Visual Recognition, CVPR 2022 (``"class_mean"``)
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

ContrastMode = Literal["all", "one"]
Summation = Literal["out", "in"]
Denominator = Literal["all", "one_positive", "only_negatives", "class_mean"]
Reduction = Literal["mean", "sum", "none"]
Multilabel = Literal["jaccard", "any"]

CONTRAST_MODES: tuple[str, ...] = get_args(ContrastMode)
SUMMATIONS: tuple[str, ...] = get_args(Summation)
DENOMINATORS: tuple[str, ...] = get_args(Denominator)
REDUCTIONS: tuple[str, ...] = get_args(Reduction)
MULTILABELS: tuple[str, ...] = get_args(Multilabel)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"Expected argument `{name}` to be one of {allowed}, but got {value!r}.")


@dataclasses.dataclass(frozen=True)
class SupConOptions:
    """The options of :class:`~lightning_supcon.SupConLoss` (documented there), validated once, when built.

    :class:`~lightning_supcon.SupConLoss` builds one at construction and :func:`~lightning_supcon.supcon_loss` at
    each call; the computation receives the record. A new option is a field here, a parameter (with its docstring)
    of both public signatures, and its use.

    Raises:
        ValueError: Naming the bad value and the allowed ones.

    Example:
        >>> options = SupConOptions(temperature=0.2)
        >>> options.temperature, options.summation
        (0.2, 'out')
        >>> dataclasses.replace(options, summation="within")  # a changed copy is validated too
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `summation` to be one of ('out', 'in'), but got 'within'.
    """

    temperature: float = 0.1
    base_temperature: float | None = None
    contrast_mode: ContrastMode = "all"
    summation: Summation = "out"
    denominator: Denominator = "all"
    positives_cap: int | None = None
    reduction: Reduction = "mean"
    gather_distributed: bool = True
    chunk_size: int | None = None
    multilabel: Multilabel = "jaccard"

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"Expected argument `temperature` to be > 0, but got {self.temperature}.")
        if self.base_temperature is not None and not self.base_temperature > 0:
            raise ValueError(
                f"Expected argument `base_temperature` to be > 0 or None, but got {self.base_temperature}."
            )
        _check_choice("contrast_mode", self.contrast_mode, CONTRAST_MODES)
        _check_choice("summation", self.summation, SUMMATIONS)
        _check_choice("denominator", self.denominator, DENOMINATORS)
        _check_choice("reduction", self.reduction, REDUCTIONS)
        _check_choice("multilabel", self.multilabel, MULTILABELS)
        cap = self.positives_cap
        if self.denominator == "class_mean" and cap is not None:
            raise ValueError(
                f"`denominator='class_mean'` averages whole classes: it does not go with `positives_cap` ({cap})."
            )
        if cap is not None and cap < 0:
            raise ValueError(f"Expected argument `positives_cap` to be >= 0 or None, but got {cap}.")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"Expected argument `chunk_size` to be >= 1 or None, but got {self.chunk_size}.")
