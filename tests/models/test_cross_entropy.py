"""CrossEntropyModule: end-to-end training, the use of multi-view batches, metrics, checkpoints and bad inputs."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_supcon import DigitsDataModule
from lightning_supcon.models.cross_entropy import CrossEntropyModule
from lightning_supcon.models.linear_probe import LinearProbeModule
from lightning_supcon.models.optimization import sgd
from tests.helpers import cpu_trainer


class MLP(nn.Module):
    """A BN-free encoder of flat inputs of 12 values."""

    feature_dim = 16

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, self.feature_dim))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


def _clusters(n: int = 32, n_views: int | None = 2) -> TensorDataset:
    """Clustered data of 4 classes; ``(n, n_views, 12)`` views, or ``(n, 12)`` samples for ``n_views=None``."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 4
    samples = 2.0 * torch.randn(4, 12, generator=gen)[labels] + 0.5 * torch.randn(n, 12, generator=gen)
    if n_views is None:
        return TensorDataset(samples, labels)
    return TensorDataset(samples[:, None] + 0.3 * torch.randn(n, n_views, 12, generator=gen), labels)


class RecordBatchSizes(pl.Callback):
    """Records the number of samples (logits rows) the module trains on per step."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        batch = args[1]
        assert isinstance(pl_module, CrossEntropyModule)
        inputs, _ = pl_module._training_inputs(*batch)  # type: ignore[misc]
        self.sizes.append(inputs.shape[0])


class TestCrossEntropyModule:
    def test_training_lowers_the_loss(self, tmp_path: Path) -> None:
        model = CrossEntropyModule(encoder=MLP(), num_classes=4, optimizer=sgd(lr=0.1, weight_decay=0.0))
        data = _clusters()
        views, labels = data.tensors
        before = F.cross_entropy(model(views[:, 0]), labels).item()
        cpu_trainer(tmp_path, max_epochs=10).fit(model, DataLoader(data, batch_size=8))
        after = F.cross_entropy(model(views[:, 0]), labels).item()
        assert after < before / 2

    @pytest.mark.parametrize(
        ("train_views", "n_views", "expected"), [("all", 3, 24), ("first", 3, 8), ("single", None, 8)]
    )
    def test_train_views(self, tmp_path: Path, train_views: str, n_views: int | None, expected: int) -> None:
        model = CrossEntropyModule(encoder=MLP(), num_classes=4, train_views=train_views)  # type: ignore[arg-type]
        record = RecordBatchSizes()
        loader = DataLoader(_clusters(n_views=n_views), batch_size=8)
        cpu_trainer(tmp_path, fast_dev_run=True, callbacks=[record]).fit(model, loader)
        assert record.sizes == [expected]

    def test_all_views_repeat_labels_sample_major(self) -> None:
        model = CrossEntropyModule(encoder=MLP(), num_classes=4)
        views = torch.arange(2 * 3 * 12, dtype=torch.float32).view(2, 3, 12)
        inputs, labels = model._training_inputs(views, torch.tensor([1, 3]))
        assert labels.tolist() == [1, 1, 1, 3, 3, 3]
        torch.testing.assert_close(inputs[4], views[1, 1])

    def test_digits_logs_metrics_and_tests(self, tmp_path: Path) -> None:
        dm = DigitsDataModule(batch_size=64, n_views=1)
        model = CrossEntropyModule(encoder="small_cnn", in_channels=1, num_classes=10)
        trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=2, limit_test_batches=2)
        trainer.fit(model, datamodule=dm)
        assert {"train/loss", "train/top1", "val/loss", "val/top1", "val/top5"} <= set(trainer.callback_metrics)
        results = trainer.test(model, datamodule=dm, verbose=False)[0]
        assert 0.0 <= results["test/top1"] <= results["test/top5"] <= 1.0
        assert not any("knn" in key for key in trainer.callback_metrics)  # knn_k=0: no kNN, no bank pass

    def test_predict_returns_features_logits_labels(self, tmp_path: Path) -> None:
        model = CrossEntropyModule(encoder=MLP(), num_classes=4)
        loader = DataLoader(_clusters(n=6, n_views=None), batch_size=3)
        out: Any = cpu_trainer(tmp_path).predict(model, loader)
        assert out[0]["features"].shape == (3, 16) and out[0]["logits"].shape == (3, 4)
        assert out[1]["labels"].tolist() == [3, 0, 1]

    def test_checkpoint_records_its_kind(self, tmp_path: Path) -> None:
        checkpoint: dict = {}
        CrossEntropyModule(encoder="small_cnn", in_channels=1).on_save_checkpoint(checkpoint)
        assert checkpoint["lightning_supcon"] | {"preprocessing": None} == {
            "kind": "cross_entropy",
            "encoder": "small_cnn",
            "feature_dim": 128,
            "in_channels": 1,
            "encoder_args": {"class": "SmallCNN", "init_args": {"in_channels": 1, "width": 32, "feature_dim": 128}},
            "preprocessing": None,  # no DataModule: nothing measured to record
        }

    def test_optimizes_every_parameter(self, tmp_path: Path) -> None:
        model = CrossEntropyModule(
            encoder=MLP(), num_classes=4, optimizer=functools.partial(torch.optim.RMSprop, lr=0.01, momentum=0.9)
        )
        trainer = cpu_trainer(tmp_path, fast_dev_run=True)
        trainer.fit(model, DataLoader(_clusters(), batch_size=8))
        optimizer = trainer.optimizers[0]
        assert isinstance(optimizer, torch.optim.RMSprop)
        assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(model.parameters()))


class TestCrossEntropyModuleErrors:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"num_classes": 1}, "num_classes"),
            ({"train_views": "both"}, "train_views.*'both'"),
            ({"label_smoothing": 1.0}, "label_smoothing"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            CrossEntropyModule(encoder=MLP(), **kwargs)

    def test_plain_batch_with_view_mode(self) -> None:
        model = CrossEntropyModule(encoder=MLP(), num_classes=4)
        with pytest.raises(ValueError, match=r"n_views.*train_views='single'"):
            model._training_inputs(torch.randn(8, 12), torch.zeros(8, dtype=torch.long))

    def test_labels_outside_num_classes(self) -> None:
        model = CrossEntropyModule(encoder=MLP(), num_classes=3)
        with pytest.raises(ValueError, match=r"num_classes=3.*\[0, 3\]"):
            model._training_inputs(torch.randn(4, 2, 12), torch.tensor([0, 1, 2, 3]))

    def test_labels_of_the_wrong_shape(self) -> None:
        model = CrossEntropyModule(encoder=MLP(), num_classes=4)
        with pytest.raises(ValueError, match=r"labels of shape \(4,\)"):
            model._training_inputs(torch.randn(4, 2, 12), torch.zeros(4, 2, dtype=torch.long))


def _multi_hot(n: int = 32, n_views: int | None = 2) -> TensorDataset:
    """3 binary labels, each moving its own direction of the 12 inputs; every label set, the empty one included."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([[(i >> bit) & 1 for bit in range(3)] for i in range(n)])
    samples = 2.0 * labels.float() @ torch.randn(3, 12, generator=gen) + 0.3 * torch.randn(n, 12, generator=gen)
    if n_views is None:
        return TensorDataset(samples, labels)
    return TensorDataset(samples[:, None] + 0.1 * torch.randn(n, n_views, 12, generator=gen), labels)


class TestMultilabelHead:
    def test_trains_with_binary_cross_entropy_and_logs_multilabel_metrics(self, tmp_path: Path) -> None:
        model = CrossEntropyModule(
            encoder=MLP(), num_classes=3, multilabel=True, optimizer=sgd(lr=0.1, weight_decay=0.0)
        )
        views, labels = _multi_hot().tensors
        before = F.binary_cross_entropy_with_logits(model(views[:, 0]), labels.float()).item()
        trainer = cpu_trainer(tmp_path, max_epochs=10)
        trainer.fit(model, DataLoader(_multi_hot(), batch_size=8), DataLoader(_multi_hot(n_views=None), batch_size=8))
        after = F.binary_cross_entropy_with_logits(model(views[:, 0]), labels.float()).item()
        assert after < before / 2
        metrics = trainer.callback_metrics
        assert {"train/loss", "train/f1", "train/accuracy", "val/loss", "val/map", "val/f1", "val/accuracy"} <= set(
            metrics
        )
        assert not any("top" in key for key in metrics)
        assert metrics["val/map"] > 0.9

    def test_views_repeat_multi_hot_labels_sample_major(self) -> None:
        model = CrossEntropyModule(encoder=MLP(), num_classes=3, multilabel=True)
        _, labels = model._training_inputs(torch.randn(2, 2, 12), torch.tensor([[1, 0, 1], [0, 1, 0]]))
        assert labels.tolist() == [[1, 0, 1], [1, 0, 1], [0, 1, 0], [0, 1, 0]]

    def test_linear_probe_has_the_multilabel_head(self) -> None:
        probe = LinearProbeModule(encoder=MLP(), num_classes=3, multilabel=True)
        assert probe.multilabel and probe.classifier.out_features == 3
        assert sorted(probe.eval_metrics["val"].keys()) == ["val/accuracy", "val/f1", "val/map"]

    def test_class_labels_to_a_multilabel_head(self) -> None:
        model = CrossEntropyModule(encoder=MLP(), num_classes=3, multilabel=True)
        with pytest.raises(ValueError, match="Class labels need `multilabel=False`"):
            model._training_inputs(torch.randn(4, 2, 12), torch.tensor([0, 1, 2, 0]))
