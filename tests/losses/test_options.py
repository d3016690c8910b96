"""SupConOptions: one record of the loss's options, validated once, whose fields both public signatures mirror."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest

from lightning_supcon import SupConLoss, supcon_loss
from lightning_supcon.losses.options import (
    CONTRAST_MODES,
    DENOMINATORS,
    MULTILABELS,
    REDUCTIONS,
    SUMMATIONS,
    SupConOptions,
)

FIELDS = [field.name for field in dataclasses.fields(SupConOptions)]


def _defaults(function: object, names: list[str]) -> dict[str, object]:
    parameters = inspect.signature(function).parameters  # type: ignore[arg-type]
    return {name: parameters[name].default for name in names}


class TestSupConOptions:
    def test_fields_are_the_module_signature(self) -> None:
        """SupConLoss's arguments are the record's fields, in order and with the same defaults."""
        assert list(inspect.signature(SupConLoss).parameters) == FIELDS
        assert _defaults(SupConLoss, FIELDS) == dataclasses.asdict(SupConOptions())

    def test_fields_are_the_functional_options(self) -> None:
        """supcon_loss takes the same options; only ``gather_distributed`` defaults differently (off)."""
        tensors = {"features", "labels", "mask", "queue", "queue_labels"}
        assert [name for name in inspect.signature(supcon_loss).parameters if name not in tensors] == FIELDS
        expected = dataclasses.asdict(SupConOptions()) | {"gather_distributed": False}
        assert _defaults(supcon_loss, FIELDS) == expected

    @pytest.mark.parametrize(
        ("name", "allowed"),
        [
            ("contrast_mode", CONTRAST_MODES),
            ("summation", SUMMATIONS),
            ("denominator", DENOMINATORS),
            ("reduction", REDUCTIONS),
            ("multilabel", MULTILABELS),
        ],
    )
    def test_rejects_a_choice_outside_its_literal(self, name: str, allowed: tuple[str, ...]) -> None:
        message = f"Expected argument `{name}` to be one of {allowed}, but got 'bogus'."
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            SupConOptions(**{name: "bogus"})  # type: ignore[arg-type]
        for value in allowed:
            assert getattr(SupConOptions(**{name: value}), name) == value  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"temperature": 0.0}, "Expected argument `temperature` to be > 0, but got 0.0."),
            ({"temperature": -1.0}, "Expected argument `temperature` to be > 0, but got -1.0."),
            ({"temperature": float("nan")}, "Expected argument `temperature` to be > 0, but got nan."),
            ({"base_temperature": 0.0}, "Expected argument `base_temperature` to be > 0 or None, but got 0.0."),
            ({"positives_cap": -2}, "Expected argument `positives_cap` to be >= 0 or None, but got -2."),
            ({"chunk_size": 0}, "Expected argument `chunk_size` to be >= 1 or None, but got 0."),
            (
                {"denominator": "class_mean", "positives_cap": 2},
                "`denominator='class_mean'` averages whole classes: it does not go with `positives_cap` (2).",
            ),
        ],
    )
    def test_rejects_a_value_outside_its_range(self, kwargs: dict, message: str) -> None:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            SupConOptions(**kwargs)

    @pytest.mark.parametrize(
        "kwargs", [{"temperature": 1e-6}, {"base_temperature": 1e-6}, {"positives_cap": 0}, {"chunk_size": 1}]
    )
    def test_accepts_the_edge_of_each_range(self, kwargs: dict) -> None:
        assert dataclasses.asdict(SupConOptions(**kwargs)).items() >= kwargs.items()

    def test_frozen_and_a_changed_copy_is_validated(self) -> None:
        options = SupConOptions(temperature=0.2)
        with pytest.raises(dataclasses.FrozenInstanceError):
            options.temperature = 0.5  # type: ignore[misc]
        assert dataclasses.replace(options, chunk_size=8).chunk_size == 8
        with pytest.raises(ValueError, match=r"`chunk_size` to be >= 1 or None, but got -1\."):
            dataclasses.replace(options, chunk_size=-1)
