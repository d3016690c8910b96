"""check_positive_integers: the first value below 1, in the order given, is named with its value."""

from __future__ import annotations

import pytest

from lightning_supcon.utils.checks import check_positive_integers


class TestCheckPositiveIntegers:
    @pytest.mark.parametrize("arguments", [{}, {"k": 1}, {"k": 1, "chunk_size": 10**9}])
    def test_accepts_positive_values(self, arguments: dict[str, int]) -> None:
        check_positive_integers(**arguments)

    @pytest.mark.parametrize(
        ("arguments", "match"),
        [
            ({"k": 0}, "Expected argument `k` to be a positive integer, but got 0$"),
            ({"k": 3, "width": -2}, "Expected argument `width` to be a positive integer, but got -2$"),
            ({"b": 0, "a": -1}, "`b` to be a positive integer, but got 0$"),  # the first given, not the smallest
        ],
    )
    def test_names_the_first_bad_value(self, arguments: dict[str, int], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            check_positive_integers(**arguments)
