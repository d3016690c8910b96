"""Encoder metadata in checkpoints: one line naming both architectures for a checkpoint of another model."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_supcon import CrossEntropyModule, DigitsDataModule, OnlineEval, SupConModule
from lightning_supcon.cli import main
from lightning_supcon.models.encoder_checkpoint import data_preprocessing
from tests.helpers import DIGITS, cpu_trainer

MODELS = Path(__file__).resolve().parents[2] / "lightning_supcon" / "models"


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16))


def _checkpoint(model: nn.Module, root: Path, batch: tuple[torch.Tensor, torch.Tensor]) -> Path:
    trainer = cpu_trainer(root, max_steps=1, limit_val_batches=0)
    trainer.fit(model, DataLoader(TensorDataset(*batch), batch_size=4))  # type: ignore[arg-type]
    trainer.save_checkpoint(root / "other.ckpt")
    return root / "other.ckpt"


class TestArchitectureCheck:
    def test_checkpoint_of_another_encoder_names_both(self, tmp_path: Path) -> None:
        views = (torch.randn(8, 2, 12), torch.arange(8) % 4)
        path = _checkpoint(
            SupConModule(encoder=_mlp(), feature_dim=16, num_classes=4, online=OnlineEval(knn_k=0)), tmp_path, views
        )
        model = SupConModule(encoder="small_cnn", in_channels=1, num_classes=4, online=OnlineEval(knn_k=0))
        images = DataLoader(TensorDataset(torch.randn(8, 2, 1, 8, 8), torch.arange(8) % 4), batch_size=4)
        with pytest.raises(ValueError, match=r"holds a supcon model with encoder 'Sequential'.*this model is a supcon"):
            cpu_trainer(tmp_path, max_steps=2).fit(model, images, ckpt_path=path)

    def test_checkpoint_of_another_kind_names_both(self, tmp_path: Path) -> None:
        batch = (torch.randn(8, 12), torch.arange(8) % 4)
        path = _checkpoint(CrossEntropyModule(encoder=_mlp(), feature_dim=16, num_classes=4, train_views="single"),
                           tmp_path, batch)  # fmt: skip
        model = SupConModule(encoder=_mlp(), feature_dim=16, num_classes=4, online=OnlineEval(knn_k=0))
        with pytest.raises(ValueError, match=r"holds a cross_entropy model .* this model is a supcon model"):
            model.on_load_checkpoint(torch.load(path, weights_only=False))

    def test_silent_substitution_checkpoint_of_another_image_size_is_one_warning_line(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # Evaluating at another image size than the checkpoint was trained with (a probe: 0.392 instead of 0.994).
        model = SupConModule(encoder="small_cnn", in_channels=1, num_classes=10, online=OnlineEval(knn_k=0))
        checkpoint: dict = {}
        model.on_save_checkpoint(checkpoint)
        checkpoint["lightning_supcon"]["preprocessing"] = data_preprocessing(DigitsDataModule(image_size=32))
        model._trainer = SimpleNamespace(ckpt_path="run.ckpt", datamodule=DigitsDataModule(image_size=8))  # type: ignore[assignment]
        model.on_load_checkpoint(checkpoint)
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("warning: checkpoint 'run.ckpt' was trained on other inputs than this run's data gives")
        assert "(image_size 32 -> 8, std " in line  # the digits measure their std at each size
        model._trainer = SimpleNamespace(ckpt_path="run.ckpt", datamodule=DigitsDataModule(image_size=32))  # type: ignore[assignment]
        model.on_load_checkpoint(checkpoint)
        assert capsys.readouterr().err == ""

    def test_cli_ckpt_path_of_another_architecture_is_one_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An RGB run's checkpoint (as the own-data example writes it) resumed with the digits config (grey)."""
        monkeypatch.chdir(tmp_path)
        views = (torch.randn(8, 2, 3, 8, 8), torch.arange(8) % 4)
        path = _checkpoint(
            SupConModule(encoder="small_cnn", in_channels=3, num_classes=4, online=OnlineEval(knn_k=0)), tmp_path, views
        )
        checkpoint = torch.load(path, weights_only=True)
        checkpoint["hyper_parameters"] = {"_class_path": "lightning_supcon.SupConModule", "in_channels": 3}  # CLI
        torch.save(checkpoint, path)
        args = ["fit", "--config", DIGITS, "--ckpt_path", str(path), "--trainer.fast_dev_run=true"]
        with pytest.raises(SystemExit) as exc:
            main([*args, "--trainer.callbacks=[]", "--trainer.logger=false"])
        assert exc.value.code == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(errors) == 1, errors
        assert "holds a supcon model with encoder 'small_cnn' (feature_dim=128, in_channels=3)" in errors[0]
        assert "this model is a supcon model with encoder 'small_cnn' (feature_dim=128, in_channels=1)" in errors[0]


def test_no_lightning_module_file_imports_another_ones_helpers() -> None:
    """Helpers shared by the LightningModules live in neutral modules; a module file may only subclass another."""
    modules = {"supcon_module", "cross_entropy", "linear_probe"}
    for name in modules:
        tree = ast.parse((MODELS / f"{name}.py").read_text())
        imported = {
            (node.module.rsplit(".", 1)[-1], alias.name)
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
            for alias in node.names
        }
        others = {(module, what) for module, what in imported if module in modules - {name}}
        assert others <= {("cross_entropy", "CrossEntropyModule"), ("cross_entropy", "TrainViews")}, (name, others)
