"""A class-stratified, seeded fraction of a training set's labels: the semi-supervised protocol of [0] and [1].

:func:`stratified_subset` keeps, in every class, ``round(fraction * n_class)`` samples and at least one, drawn
from a per-class random order seeded by ``(seed, class)``. The subset depends on the labels and the seed only, so
every DDP rank (and every run with another training seed) computes the same one without a collective, and the
subsets of one seed are nested: the 1% subset is part of the 10% one.

Why not scikit-learn's ``train_test_split(stratify=...)`` (the helper solo-learn [1] uses): it allocates the
samples over the whole set (``_approximate_mode``), so at 1% a class with 5 of 2,005 samples gets none; it refuses
a ``train_size`` smaller than the number of classes (1% of 500 digits over 10 classes) and any class with a single
sample. Rounding per class keeps every class, which a label fraction must.

- [0] Chen et al., SimCLR, ICML 2020, https://arxiv.org/abs/2002.05709 (Sec. 6: fine-tuning on 1% and 10% of
  the ImageNet labels, a class-balanced subset)
- [1] da Costa et al., solo-learn, JMLR 2022, https://github.com/vturrisi/solo-learn (``data_fraction``)
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np

from lightning_supcon.data.labels import LabelledDataset
from lightning_supcon.losses.positives import UNKNOWN  # the loss gives such a sample only its own views as positives

Unlabelled = Literal["drop", "unknown"]
UNLABELLED: tuple[str, ...] = get_args(Unlabelled)


def check_label_fraction(fraction: float, unlabelled: str = "drop", sampler: str = "random") -> None:
    """Raise ``ValueError`` unless ``fraction`` is in ``(0, 1]`` and ``unlabelled`` is ``"drop"`` or ``"unknown"``
    (which the class-balanced sampler cannot draw from: -1 is no class)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"Expected `label_fraction` in (0, 1], but got {fraction}.")
    if unlabelled not in UNLABELLED:
        raise ValueError(f"Expected `unlabelled` to be one of {UNLABELLED}, but got {unlabelled!r}.")
    if unlabelled == "unknown" and fraction < 1.0 and sampler == "balanced":
        raise ValueError(
            "Expected `sampler='random'` with `unlabelled='unknown'`: the class-balanced sampler draws classes, and "
            "the unlabelled samples (-1) have none."
        )


def stratified_subset(labels: Any, fraction: float, seed: int = 0) -> np.ndarray:
    """Indices of a class-stratified random ``fraction`` of the samples, at least one per class, sorted.

    Args:
        labels: Integer class labels ``(N,)``; samples labelled ``-1`` (unknown) are never picked.
        fraction: Fraction of each class to keep, in ``(0, 1]``: ``max(1, round(fraction * n_class))`` samples.
        seed: Seed of the draw; class ``c`` draws its order from ``(seed, c)``.

    Returns:
        int64 indices into ``labels``, ascending.

    Raises:
        ValueError: For a ``fraction`` outside ``(0, 1]``, labels that are not one-dimensional, or labels below -1.

    Example:
        >>> labels = [0] * 50 + [1] * 30 + [2] * 2
        >>> subset = stratified_subset(labels, 0.1, seed=0)
        >>> np.bincount(np.asarray(labels)[subset]).tolist()
        [5, 3, 1]
        >>> set(subset) <= set(stratified_subset(labels, 0.5, seed=0))  # nested
        True
    """
    check_label_fraction(fraction)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1:
        raise ValueError(
            f"Expected class labels of shape (N,) for a stratified subset, but got shape {labels.shape} (a multi-label "
            "data set has no single class to stratify by)."
        )
    if labels.size and labels.min() < -1:
        raise ValueError(f"Expected class labels >= 0 (or -1 for unknown), but got {int(labels.min())}.")
    picked = []
    for label in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == label)
        keep = min(len(members), max(1, int(np.floor(fraction * len(members) + 0.5))))
        order = np.random.default_rng((seed, int(label))).permutation(len(members))
        picked.append(members[order[:keep]])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def label_subset(data: LabelledDataset, fraction: float, seed: int = 0, unlabelled: str = "drop") -> LabelledDataset:
    """``data`` itself for ``fraction == 1``; else its :func:`stratified_subset`, drawn from the labels ``data``
    carries: those samples (``unlabelled="drop"``), or every sample with the others labelled -1 (``"unknown"``:
    semi-supervised SupCon, where the loss gives such a sample only its own views as positives).

    Example:
        >>> data = LabelledDataset(np.zeros((20, 1)), np.arange(20) % 2)
        >>> len(label_subset(data, 0.2)), label_subset(data, 1.0) is data
        (4, True)
        >>> partial = label_subset(data, 0.2, unlabelled="unknown")
        >>> len(partial), int((partial.labels >= 0).sum())
        (20, 4)
    """
    check_label_fraction(fraction, unlabelled)
    if fraction == 1.0:
        return data
    picked = stratified_subset(data.labels, fraction, seed)
    if unlabelled == "unknown":
        labels = np.full_like(data.labels, UNKNOWN)
        labels[picked] = data.labels[picked]
        return data.relabel(labels)
    return data.subset(picked)
