"""Argument checks shared by the rooms: one rule, one message (the torchmetrics wording, ``Expected argument ...``)."""

from __future__ import annotations


def check_positive_integers(**arguments: int) -> None:
    """Raise ``ValueError`` naming the first of ``arguments`` (in the order given) that is below 1.

    Args:
        **arguments: ``name=value`` pairs, the names as the caller's parameters are spelt.

    Raises:
        ValueError: ``Expected argument `name` to be a positive integer, but got value``, for the first value < 1.

    Example:
        >>> check_positive_integers(k=5, chunk_size=1)
        >>> check_positive_integers(k=5, chunk_size=0, bank_chunk_size=-1)
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `chunk_size` to be a positive integer, but got 0
    """
    for name, value in arguments.items():
        if value < 1:
            raise ValueError(f"Expected argument `{name}` to be a positive integer, but got {value}")
