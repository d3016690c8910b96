"""The checks of :class:`~lightning_supcon.data.base.MultiViewDataModule`'s loader options, in one place.

Example:
    >>> from lightning_supcon.data.recipe import SIMCLR
    >>> check_loader_options(batch_size=0, n_views=2, eval_batch_size=None, num_workers=0, augment_on="cpu",
    ...                      augment=SIMCLR)
    Traceback (most recent call last):
    ...
    ValueError: Expected argument `batch_size` to be >= 1, but got 0.
"""

from __future__ import annotations

from typing import Literal, get_args

from lightning_supcon.data.recipe import DEVICE_COLOURS, AugmentRecipe

AugmentOn = Literal["cpu", "device"]
AUGMENT_ON: tuple[str, ...] = get_args(AugmentOn)


def check_loader_options(
    batch_size: int,
    n_views: int,
    eval_batch_size: int | None,
    num_workers: int,
    augment_on: str,
    augment: AugmentRecipe,
) -> None:
    """Raise for loader options no DataModule can use.

    Raises:
        ValueError: For ``batch_size``, ``n_views`` or ``eval_batch_size`` < 1, ``num_workers`` < 0, an unknown
            ``augment_on``, or an ``augment.colour`` the device backend (kornia) lacks with ``augment_on="device"``.
    """
    for name, value in (("batch_size", batch_size), ("n_views", n_views), ("eval_batch_size", eval_batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"Expected argument `{name}` to be >= 1, but got {value}.")
    if num_workers < 0:
        raise ValueError(f"Expected argument `num_workers` to be >= 0, but got {num_workers}.")
    if augment_on not in AUGMENT_ON:
        raise ValueError(f"Expected argument `augment_on` to be one of {AUGMENT_ON}, but got {augment_on!r}.")
    if augment_on == "device" and augment.colour not in DEVICE_COLOURS:
        raise ValueError(
            f"Expected `augment.colour` to be one of {DEVICE_COLOURS} with `augment_on='device'`, but got "
            f"{augment.colour!r}."
        )


def check_enough_samples(num_samples: int, world_size: int, batch_size: int, drop_last: bool) -> None:
    """Raise when ``drop_last`` would leave a process without a single training batch.

    Raises:
        ValueError: If ``drop_last`` and a process's share of ``num_samples`` is below ``batch_size``.
    """
    if drop_last and -(-num_samples // world_size) < batch_size:
        raise ValueError(
            f"Expected at least `batch_size` ({batch_size}) training samples per process with `drop_last=True`, "
            f"but the training set has {num_samples} for {world_size} process(es): lower `batch_size` or set "
            "`drop_last=False`."
        )
