"""utils/numerics.py: half-precision inputs are computed in float32 and returned in their own dtype."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_supcon.utils.numerics import compute_dtype, l2_normalize


class TestComputeDtype:
    @pytest.mark.parametrize(
        ("dtype", "expected"),
        [
            (torch.float16, torch.float32),
            (torch.bfloat16, torch.float32),
            (torch.float32, torch.float32),
            (torch.float64, torch.float64),
        ],
    )
    def test_at_least_float32(self, dtype: torch.dtype, expected: torch.dtype) -> None:
        assert compute_dtype(dtype) == expected


class TestL2Normalize:
    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
    def test_zero_vector_gives_zeros_not_nan(self, dtype: torch.dtype) -> None:
        out = l2_normalize(torch.zeros(2, 3, dtype=dtype))
        assert out.dtype == dtype and torch.equal(out, torch.zeros(2, 3, dtype=dtype))

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_equals_f_normalize_in_full_precision(self, dtype: torch.dtype) -> None:
        x = torch.randn(4, 5, dtype=dtype)
        assert torch.equal(l2_normalize(x, dim=0), F.normalize(x, dim=0))

    def test_float16_is_float32_result_rounded(self) -> None:
        x = (torch.randn(6, 4) * 1e-3).half()  # squares below float16's smallest normal number
        torch.testing.assert_close(l2_normalize(x), F.normalize(x.float(), dim=-1).half(), rtol=0, atol=0)
