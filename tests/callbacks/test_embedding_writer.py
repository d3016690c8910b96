"""EmbeddingWriter: the files it writes load back (weights_only / NumPy), in data-set order, also under DDP."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_supcon import OnlineEval, SupConModule
from lightning_supcon.callbacks.embedding_writer import EmbeddingWriter
from lightning_supcon.models.cross_entropy import CrossEntropyModule
from tests.helpers import run_worker

SCRIPT = Path(__file__).with_name("ddp_embedding_writer.py")


def _trainer(tmp_path: Path, writer: EmbeddingWriter) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[writer],
    )


class MLP(nn.Module):
    feature_dim = 16

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


def _loader(n: int = 10, batch_size: int = 4) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, 12), torch.arange(n) % 4), batch_size=batch_size)


def _load(folder: Path, stem: str = "embeddings") -> tuple[dict[str, Tensor], Any]:
    return torch.load(folder / f"{stem}.pt", weights_only=True), np.load(folder / f"{stem}.npz")


class TestEmbeddingWriter:
    def test_supcon_features_projections_labels(self, tmp_path: Path) -> None:
        model = SupConModule(encoder=MLP(), num_classes=4, projection_dim=8, online=OnlineEval(knn_k=0))
        loader = _loader()
        _trainer(tmp_path, EmbeddingWriter(str(tmp_path / "out"))).predict(model, loader, return_predictions=False)
        tensors, arrays = _load(tmp_path / "out")
        assert set(tensors) == set(arrays.files) == {"features", "projections", "labels"}
        assert tensors["features"].shape == (10, 16) and tensors["projections"].shape == (10, 8)
        assert tensors["labels"].tolist() == (torch.arange(10) % 4).tolist()
        model.eval()
        with torch.no_grad():
            features = model(loader.dataset.tensors[0])  # type: ignore[attr-defined]
        torch.testing.assert_close(tensors["features"], features)
        for key, value in tensors.items():
            np.testing.assert_array_equal(arrays[key], value.numpy())

    def test_classifier_logits_and_bf16_stored_as_float32(self, tmp_path: Path) -> None:
        model = CrossEntropyModule(encoder=MLP(), num_classes=4).to(torch.bfloat16)
        loader = DataLoader(TensorDataset(torch.randn(5, 12, dtype=torch.bfloat16), torch.arange(5) % 4), batch_size=2)
        _trainer(tmp_path, EmbeddingWriter(str(tmp_path))).predict(model, loader)
        tensors, arrays = _load(tmp_path)
        assert set(tensors) == {"features", "logits", "labels"}
        assert tensors["logits"].shape == (5, 4) and tensors["logits"].dtype == torch.float32
        assert arrays["features"].dtype == np.float32 and arrays["labels"].dtype == np.int64

    def test_bare_tensor_and_custom_name(self, tmp_path: Path) -> None:
        class Bare(CrossEntropyModule):
            def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:  # type: ignore[override]
                return self.features(batch[0])

        writer = EmbeddingWriter(str(tmp_path), filename="bare")
        _trainer(tmp_path, writer).predict(Bare(encoder=MLP(), num_classes=4), _loader(n=3))
        tensors, _ = _load(tmp_path, "bare")
        assert list(tensors) == ["features"] and tensors["features"].shape == (3, 16)

    @pytest.mark.parametrize(
        ("filename", "split", "stem"),
        [(None, "train", "embeddings_train"), (None, None, "embeddings"), ("mine", "val", "mine")],
    )
    def test_stem_names_the_predicted_split(self, filename: str | None, split: str | None, stem: str) -> None:
        trainer = SimpleNamespace(datamodule=SimpleNamespace(predict_split=split) if split else None)
        assert EmbeddingWriter(filename=filename).stem(trainer) == stem  # type: ignore[arg-type]

    def test_two_loaders_two_files(self, tmp_path: Path) -> None:
        model = CrossEntropyModule(encoder=MLP(), num_classes=4)
        _trainer(tmp_path, EmbeddingWriter(str(tmp_path))).predict(model, [_loader(n=3), _loader(n=5)])
        assert _load(tmp_path, "embeddings_0")[0]["features"].shape == (3, 16)
        assert _load(tmp_path, "embeddings_1")[0]["features"].shape == (5, 16)

    def test_rejects_other_outputs(self, tmp_path: Path) -> None:
        class Strings(CrossEntropyModule):
            def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
                return {"names": ["a"] * len(batch[0])}

        with pytest.raises(ValueError, match="dict of tensors, but got dict"):
            _trainer(tmp_path, EmbeddingWriter(str(tmp_path))).predict(Strings(encoder=MLP(), num_classes=4), _loader())

    def test_rejects_ragged_outputs(self, tmp_path: Path) -> None:
        class Ragged(CrossEntropyModule):
            def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
                return {"features": batch[0], "labels": batch[1][:1]}

        with pytest.raises(ValueError, match="batch size first"):
            _trainer(tmp_path, EmbeddingWriter(str(tmp_path))).predict(Ragged(encoder=MLP(), num_classes=4), _loader())


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_gathers_every_sample_in_order(tmp_path: Path) -> None:
    run_worker(SCRIPT, str(tmp_path / "out"), cwd=tmp_path)
    tensors, arrays = _load(tmp_path / "out")
    expected = 2 * torch.stack([torch.arange(7), -torch.arange(7)], dim=1).float()
    torch.testing.assert_close(tensors["features"], expected)
    assert tensors["labels"].tolist() == [i % 3 for i in range(7)]
    np.testing.assert_array_equal(arrays["features"], expected.numpy())
