"""The options of the SupCon loss: their types, the allowed values (one source: the ``Literal``), one validation.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [1] Zhu et al., Balanced Contrastive Learning for Long-Tailed Visual Recognition, CVPR 2022 (``"class_mean"``)
"""

from __future__ import annotations

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


def check_options(
    *,
    temperature: float,
    base_temperature: float | None,
    contrast_mode: str,
    summation: str,
    denominator: str,
    positives_cap: int | None,
    reduction: str,
    chunk_size: int | None,
    multilabel: str = "jaccard",
) -> None:
    """Validate the loss's options (documented on :class:`~lightning_supcon.SupConLoss`).

    Runs once per :class:`~lightning_supcon.SupConLoss` (at construction) and at each call of the public
    :func:`~lightning_supcon.supcon_loss`.

    Raises:
        ValueError: Naming the bad value and the allowed ones.

    Example:
        >>> check_options(temperature=0.1, base_temperature=None, contrast_mode="all", summation="out",
        ...               denominator="all", positives_cap=None, reduction="mean", chunk_size=None)
        >>> check_options(temperature=0.1, base_temperature=None, contrast_mode="all", summation="within",
        ...               denominator="all", positives_cap=None, reduction="mean", chunk_size=None)
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `summation` to be one of ('out', 'in'), but got 'within'.
    """
    if not temperature > 0:
        raise ValueError(f"Expected argument `temperature` to be > 0, but got {temperature}.")
    if base_temperature is not None and not base_temperature > 0:
        raise ValueError(f"Expected argument `base_temperature` to be > 0 or None, but got {base_temperature}.")
    _check_choice("contrast_mode", contrast_mode, CONTRAST_MODES)
    _check_choice("summation", summation, SUMMATIONS)
    _check_choice("denominator", denominator, DENOMINATORS)
    _check_choice("reduction", reduction, REDUCTIONS)
    _check_choice("multilabel", multilabel, MULTILABELS)
    if denominator == "class_mean" and positives_cap is not None:
        raise ValueError(
            f"`denominator='class_mean'` averages whole classes: it does not go with `positives_cap` ({positives_cap})."
        )
    if positives_cap is not None and positives_cap < 0:
        raise ValueError(f"Expected argument `positives_cap` to be >= 0 or None, but got {positives_cap}.")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"Expected argument `chunk_size` to be >= 1 or None, but got {chunk_size}.")
