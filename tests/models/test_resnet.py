"""The torchvision-based ResNet against the project's former hand-written one (benchmarks/legacy_resnet.py).

Same architecture: the same parameter count and output shape per depth, stem and channel count, and -- once the old
weights are renamed by ``rename_legacy_keys`` -- the same outputs; old encoder files and checkpoints still load.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from lightning_supcon.models import SupConModule, save_encoder
from lightning_supcon.models.checkpoint import CHECKPOINT_KEY, load_encoder_checkpoint
from lightning_supcon.models.loading import load_encoder
from lightning_supcon.models.resnet import ResNet, has_legacy_keys, rename_legacy_keys

LEGACY_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "legacy_resnet.py"


def _legacy() -> ModuleType:
    spec = importlib.util.spec_from_file_location("legacy_resnet", LEGACY_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# Counts of the hand-written ResNet before it was replaced (CIFAR stem, 3 channels), measured at commit f0aebaf.
KNOWN_COUNTS = {18: 11_168_832, 34: 21_276_992, 50: 23_500_352, 101: 42_492_480}


class TestSameArchitectureAsTheHandWrittenResNet:
    @pytest.mark.parametrize("depth", [18, 34, 50, 101])
    def test_known_parameter_counts(self, depth: int) -> None:
        assert _num_params(ResNet(depth)) == KNOWN_COUNTS[depth]

    @pytest.mark.parametrize("depth", [18, 34, 50, 101])
    @pytest.mark.parametrize(("stem", "in_channels"), [("cifar", 3), ("imagenet", 1)])
    def test_same_parameters_and_outputs(self, depth: int, stem: str, in_channels: int) -> None:
        torch.manual_seed(0)
        old = _legacy().ResNet(depth, in_channels=in_channels, stem=stem).eval()
        new = ResNet(depth, in_channels=in_channels, stem=stem).eval()  # type: ignore[arg-type]
        assert _num_params(new) == _num_params(old)
        assert [p.shape for p in new.parameters()] == [p.shape for p in old.parameters()]  # same order: optimiser state
        new.load_state_dict(rename_legacy_keys(old.state_dict()))
        x = torch.randn(2, in_channels, 32, 32)
        with torch.no_grad():
            out_old, out_new = old(x), new(x)
        assert out_new.shape == out_old.shape == (2, new.feature_dim)
        torch.testing.assert_close(out_new, out_old)

    def test_control_other_weights_give_other_outputs(self) -> None:
        old, new = _legacy().ResNet(18).eval(), ResNet(18).eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert not torch.allclose(old(x), new(x))


class TestLegacyKeys:
    def test_rename(self) -> None:
        renamed = rename_legacy_keys(_legacy().ResNet(50).state_dict())
        assert set(renamed) == set(ResNet(50).state_dict())
        assert has_legacy_keys(_legacy().ResNet(18).state_dict()) and not has_legacy_keys(renamed)

    def test_other_networks_keep_their_stem_keys(self) -> None:
        weights = {"stem.0.weight": torch.zeros(1), "stages.0.blocks.0.conv.weight": torch.zeros(1)}
        assert rename_legacy_keys(weights) is weights

    def test_an_encoder_file_of_the_old_resnet_still_loads(self, tmp_path: Path) -> None:
        old = _legacy().ResNet(18, in_channels=1).eval()
        meta = {"kind": "supcon", "encoder": "resnet18", "feature_dim": 512, "in_channels": 1}
        torch.save({CHECKPOINT_KEY: meta, "state_dict": old.state_dict()}, tmp_path / "old.pt")
        loaded = load_encoder(tmp_path / "old.pt")
        x = torch.randn(2, 1, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), old(x))

    def test_a_lightning_checkpoint_of_the_old_resnet_resumes(self, tmp_path: Path) -> None:
        model = SupConModule(encoder="resnet18", in_channels=1, knn_k=0)
        old = _legacy().ResNet(18, in_channels=1)
        state_dict = {f"encoder.{k}": v for k, v in old.state_dict().items()}
        state_dict |= {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.")}
        checkpoint = {"state_dict": state_dict, CHECKPOINT_KEY: model.encoder_metadata()}
        model.on_load_checkpoint(checkpoint)  # what Lightning calls before load_state_dict
        model.load_state_dict(checkpoint["state_dict"])
        torch.testing.assert_close(model.encoder.conv1.weight, old.stem[0].weight)
        save_encoder(model, tmp_path / "new.pt")
        assert not has_legacy_keys(load_encoder_checkpoint(tmp_path / "new.pt")[1])
