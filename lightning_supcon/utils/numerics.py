"""Numerics that hold in half precision: computations that need float32's range whatever the input's dtype.

A constant such as ``F.normalize``'s ``eps=1e-12`` is 0 in float16 (its smallest subnormal is about 6e-8), so a
zero vector divided by its clamped norm gives NaN there. The functions here compute in at least float32 (float64
stays float64) and return the input's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to compute in for inputs of ``dtype``: at least float32, float64 kept.

    Example:
        >>> compute_dtype(torch.float16), compute_dtype(torch.bfloat16), compute_dtype(torch.float64)
        (torch.float32, torch.float32, torch.float64)
    """
    return torch.promote_types(dtype, torch.float32)


def l2_normalize(x: Tensor, dim: int = -1) -> Tensor:
    """``x / max(||x||, 1e-12)`` along ``dim``, computed in at least float32 and returned in ``x``'s dtype.

    Args:
        x: Any floating tensor; a zero vector along ``dim`` maps to zeros in every dtype (no NaN in float16).
        dim: The dimension to normalise.

    Returns:
        A tensor of ``x``'s shape and dtype, of unit L2 norm along ``dim`` (or zero).

    Example:
        >>> l2_normalize(torch.zeros(1, 3, dtype=torch.float16))
        tensor([[0., 0., 0.]], dtype=torch.float16)
        >>> l2_normalize(torch.tensor([[3.0, 4.0]], dtype=torch.float16))
        tensor([[0.6001, 0.7998]], dtype=torch.float16)
    """
    return F.normalize(x.to(compute_dtype(x.dtype)), dim=dim).to(x.dtype)
