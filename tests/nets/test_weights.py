"""Weights files: reading without code, wrapper prefixes, strict loading with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lightning_supcon.nets.weights import load_weights, read_state_dict, strip_prefix


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))


class TestReadStateDict:
    @pytest.mark.parametrize("nest", [None, "state_dict", "model"])
    def test_plain_or_nested(self, tmp_path: Path, nest: str | None) -> None:
        weights = _net().state_dict()
        torch.save(weights if nest is None else {nest: weights, "epoch": 3}, tmp_path / "w.pt")
        assert set(read_state_dict(tmp_path / "w.pt")) == set(weights)

    def test_safetensors(self, tmp_path: Path) -> None:
        weights = _net().state_dict()
        save_file(weights, tmp_path / "w.safetensors")
        loaded = read_state_dict(tmp_path / "w.safetensors")
        assert all(torch.equal(loaded[k], v) for k, v in weights.items())

    def test_pickled_objects_are_not_run(self, tmp_path: Path) -> None:
        torch.save({"state_dict": _net().state_dict(), "net": _net()}, tmp_path / "w.pt")  # needs full unpickling
        with pytest.raises(
            ValueError, match=r"w\.pt' holds pickled objects .*not loaded\. Save the weights as a plain state dict"
        ):
            read_state_dict(tmp_path / "w.pt")

    def test_no_tensors(self, tmp_path: Path) -> None:
        torch.save({"epoch": 3}, tmp_path / "w.pt")
        with pytest.raises(ValueError, match="holds no state dict"):
            read_state_dict(tmp_path / "w.pt")

    def test_text_file(self, tmp_path: Path) -> None:
        (tmp_path / "w.pt").write_text("not weights")
        with pytest.raises(ValueError, match="Cannot read") as err:
            read_state_dict(tmp_path / "w.pt")
        assert "\n" not in str(err.value)


class TestStripPrefix:
    @pytest.mark.parametrize("prefix", ["", "module.", "encoder.", "module.encoder.", "model.backbone.", "_orig_mod."])
    def test_prefixes(self, prefix: str) -> None:
        weights = {f"{prefix}0.weight": torch.zeros(1), f"{prefix}1.bias": torch.zeros(1)}
        assert set(strip_prefix(weights, ["0.weight", "1.bias"])) == {"0.weight", "1.bias"}

    def test_entries_outside_the_prefix_are_dropped(self) -> None:
        weights = {"encoder.w": torch.zeros(1), "head.w": torch.ones(1), "head.b": torch.ones(1)}
        assert strip_prefix(weights, ["w"]) == {"w": torch.zeros(1)}

    def test_no_match_keeps_the_file(self) -> None:
        weights = {"x.w": torch.zeros(1)}
        assert strip_prefix(weights, ["w"]) is weights


class TestLoadWeights:
    def test_loads_strictly(self, tmp_path: Path) -> None:
        source, target = _net(), _net()
        torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "w.pt")
        load_weights(target, tmp_path / "w.pt")
        assert all(
            torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values(), strict=True)
        )

    def test_ignored_classifier_keys(self, tmp_path: Path) -> None:
        weights = _net().state_dict() | {"fc.weight": torch.zeros(2, 4)}
        torch.save(weights, tmp_path / "w.pt")
        with pytest.raises(ValueError, match=r"unexpected 1 \(e\.g\. fc\.weight\)"):
            load_weights(_net(), tmp_path / "w.pt")
        load_weights(_net(), tmp_path / "w.pt", ignore=["fc.weight", "fc.bias"])

    def test_missing_keys_named(self, tmp_path: Path) -> None:
        weights = _net().state_dict()
        del weights["1.running_mean"]
        torch.save(weights, tmp_path / "w.pt")
        with pytest.raises(ValueError, match=r"do not fit `Sequential`: missing 1 \(e\.g\. 1\.running_mean\)"):
            load_weights(_net(), tmp_path / "w.pt")
