"""EmbeddingPlot: the reduction, the random subset, the PNG, and the callback in a tiny fit (no W&B needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_supcon import DigitsDataModule, OnlineEval, SupConModule
from lightning_supcon.callbacks import embedding_plot
from lightning_supcon.callbacks.embedding_plot import (
    EmbeddingPlot,
    keep_random_subset,
    keep_stratified_subset,
    plot_embedding,
    reduce_to_2d,
    umap_available,
)
from tests.helpers import run_worker

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _clusters(n_per_class: int = 20, n_classes: int = 3, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Well-separated classes: one-hot directions plus small noise."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n_classes).repeat_interleave(n_per_class)
    features = torch.eye(dim)[labels] * 5.0 + 0.1 * torch.randn(len(labels), dim, generator=gen)
    return features, labels


class TestReduceTo2d:
    @pytest.mark.parametrize("method", ["pca", "tsne"])
    def test_keeps_separated_classes_apart(self, method: str) -> None:
        features, labels = _clusters()
        points = reduce_to_2d(features, method, seed=0)  # type: ignore[arg-type]
        assert points.shape == (60, 2) and points.dtype == np.float32 and np.isfinite(points).all()
        centres = np.stack([points[labels.numpy() == c].mean(0) for c in range(3)])
        spread = max(np.linalg.norm(points[labels.numpy() == c] - centres[c], axis=1).max() for c in range(3))
        gaps = [np.linalg.norm(centres[a] - centres[b]) for a in range(3) for b in range(a + 1, 3)]
        assert min(gaps) > 2 * spread

    def test_accepts_numpy_and_one_feature(self) -> None:
        assert reduce_to_2d(np.arange(10, dtype=np.float64)[:, None] - 5, "pca").shape == (10, 2)

    def test_auto_without_umap_is_tsne(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(embedding_plot, "umap_available", lambda: False)
        features, _ = _clusters(n_per_class=5)
        np.testing.assert_allclose(reduce_to_2d(features, "auto"), reduce_to_2d(features, "tsne"))

    @pytest.mark.parametrize(
        ("features", "method", "match"),
        [
            (torch.randn(10, 4), "lda", "`method` to be one of"),
            (torch.randn(2, 4), "pca", r"shape \(N >= 3, D\)"),
            (torch.randn(10), "pca", r"shape \(N >= 3, D\)"),
        ],
    )
    def test_rejects_bad_input(self, features: torch.Tensor, method: Any, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            reduce_to_2d(features, method)

    @pytest.mark.skipif(umap_available(), reason="umap-learn is installed")
    def test_umap_needs_umap_learn(self) -> None:
        with pytest.raises(ModuleNotFoundError, match="umap-learn"):
            reduce_to_2d(torch.randn(10, 4), "umap")


class TestKeepRandomSubset:
    @pytest.mark.parametrize("size", [1, 7, 50, 200])
    def test_matches_a_sorting_reference(self, size: int) -> None:
        keys = torch.rand(100, generator=torch.Generator().manual_seed(1))
        rows = torch.arange(100)
        kept_keys, kept = keep_random_subset(keys, rows, size=size)
        by_key = sorted(range(100), key=lambda i: -float(keys[i]))[:size]
        assert kept.tolist() == sorted(by_key)
        assert torch.equal(kept_keys, keys[kept])

    def test_batchwise_updates_equal_one_pass(self) -> None:
        keys = torch.rand(90, generator=torch.Generator().manual_seed(2))
        rows = torch.arange(90)
        kept_keys, kept = keys[:0], rows[:0]
        for start in range(0, 90, 16):
            kept_keys, kept = keep_random_subset(
                torch.cat([kept_keys, keys[start : start + 16]]), torch.cat([kept, rows[start : start + 16]]), size=10
            )
        assert torch.equal(kept, keep_random_subset(keys, rows, size=10)[1])


def _stratified_reference(keys: torch.Tensor, labels: torch.Tensor, size: int) -> list[int]:
    """Per class the rows by descending key; the largest cap q with sum_c min(n_c, q) <= size; the rows left over
    to the classes whose (q+1)-th row has the largest key. Row indices, ascending."""
    by_class: dict[int, list[int]] = {}
    for row in range(len(keys)):
        by_class.setdefault(int(labels[row]), []).append(row)
    ranked = [sorted(rows, key=lambda r: -float(keys[r])) for rows in by_class.values()]
    if len(keys) <= size:
        return list(range(len(keys)))
    cap = max(q for q in range(size + 1) if sum(min(len(rows), q) for rows in ranked) <= size)
    chosen = [row for rows in ranked for row in rows[:cap]]
    following = sorted((rows[cap] for rows in ranked if len(rows) > cap), key=lambda r: -float(keys[r]))
    return sorted(chosen + following[: size - len(chosen)])


class TestKeepStratifiedSubset:
    @pytest.mark.parametrize("size", [1, 4, 9, 30, 61, 200])
    @pytest.mark.parametrize("seed", [0, 1])
    def test_matches_the_loop_reference(self, size: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        labels = torch.cat([torch.zeros(60), torch.ones(25), torch.full((3,), 7), torch.full((12,), -1)]).long()
        labels = labels[torch.randperm(100, generator=gen)]
        keys = torch.rand(100, generator=gen)
        _, kept_labels, rows = keep_stratified_subset(keys, labels, torch.arange(100), size=size)
        assert rows.tolist() == _stratified_reference(keys, labels, size)
        assert len(rows) == min(100, size) and torch.equal(kept_labels, labels[rows])

    def test_batchwise_updates_and_ranks_equal_one_pass(self) -> None:
        gen = torch.Generator().manual_seed(3)
        labels, keys, rows = (
            torch.randint(5, (300,), generator=gen) ** 2,
            torch.rand(300, generator=gen),
            torch.arange(300),
        )
        kept = (keys[:0], labels[:0], rows[:0])
        for start in range(0, 300, 16):  # one rank, batch by batch
            part = (keys[start : start + 16], labels[start : start + 16], rows[start : start + 16])
            kept = keep_stratified_subset(*(torch.cat(pair) for pair in zip(kept, part, strict=True)), size=40)
        halves = [
            keep_stratified_subset(keys[s], labels[s], rows[s], size=40) for s in (slice(0, 130), slice(130, 300))
        ]
        merged = keep_stratified_subset(*(torch.cat(pair) for pair in zip(*halves, strict=True)), size=40)
        whole = keep_stratified_subset(keys, labels, rows, size=40)[2]
        assert torch.equal(kept[2], whole) and torch.equal(merged[2], whole)

    def test_a_rare_class_is_drawn(self) -> None:
        # 990 samples of class 0 and 10 of class 1, 100 points: a uniform sample expects 1 of class 1; here all 10.
        labels = torch.cat([torch.zeros(990), torch.ones(10)]).long()
        _, kept, _ = keep_stratified_subset(torch.rand(1000), labels, torch.arange(1000), size=100)
        assert int((kept == 1).sum()) == 10 and len(kept) == 100


class TestPlotEmbedding:
    @pytest.mark.parametrize("n_classes", [3, 25])
    def test_writes_a_png(self, tmp_path: Path, n_classes: int) -> None:
        labels = torch.arange(50) % n_classes
        path = plot_embedding(np.random.default_rng(0).normal(size=(50, 2)), labels, tmp_path / "a" / "b.png", "t")
        assert path == tmp_path / "a" / "b.png"
        assert path.read_bytes()[:8] == PNG_MAGIC

    def test_rejects_mismatched_points(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match=r"points of shape \(4, 2\)"):
            plot_embedding(np.zeros((3, 2)), torch.arange(4), tmp_path / "x.png")


class _Identity(pl.LightningModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _fit(tmp_path: Path, callback: EmbeddingPlot, max_epochs: int = 2, **kwargs: Any) -> pl.Trainer:
    torch.manual_seed(0)
    defaults: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": max_epochs,
        "limit_train_batches": 1,
        "limit_val_batches": 2,
        "num_sanity_val_steps": 0,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "enable_checkpointing": False,
        "default_root_dir": tmp_path,
        "callbacks": [callback],
    }
    trainer = pl.Trainer(**(defaults | kwargs))
    model = SupConModule(encoder="small_cnn", in_channels=1, num_classes=10, online=OnlineEval(knn_k=5))
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=16, image_size=8))
    return trainer


class TestEmbeddingPlot:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"every_n_epochs": 0}, "`every_n_epochs` to be >= 1"),
            ({"max_points": 2}, "`max_points` to be >= 3"),
            ({"method": "lda"}, "`method` to be one of"),
            ({"filename": "epoch_{epoch}.jpg"}, "end with '.png'"),
        ],
    )
    def test_rejects_bad_arguments(self, kwargs: dict[str, Any], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            EmbeddingPlot(**kwargs)

    @pytest.mark.parametrize(("max_points", "expected"), [(1000, 32), (20, 20)])
    def test_plots_every_n_epochs_and_at_the_end(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        max_points: int,
        expected: int,
    ) -> None:
        plotted: list[tuple[int, str]] = []
        titles: list[str] = []

        def spy(points: np.ndarray, labels: Any, path: Any, title: str = "", class_names: Any = None) -> Path:
            plotted.append((len(points), Path(path).name))
            titles.append(title)
            return plot_embedding(points, labels, path, title, class_names)

        monkeypatch.setattr(embedding_plot, "plot_embedding", spy)
        callback = EmbeddingPlot(every_n_epochs=2, method="pca", max_points=max_points)
        _fit(tmp_path, callback, max_epochs=3)
        # epoch 1 is due; epoch 2 is the last validation; 2 val batches of 16 from loader 0 only (not the kNN bank)
        assert plotted == [(expected, "epoch_001.png"), (expected, "epoch_002.png")]
        sampled = f"{expected} of 32 validation features (class-balanced sample, seed 0)" if expected < 32 else "32 val"
        assert all(sampled in title for title in titles), titles
        assert (tmp_path / "embeddings" / "epoch_001.png").read_bytes()[:8] == PNG_MAGIC
        latest = tmp_path / "embeddings_latest.png"
        assert latest.read_bytes() == (tmp_path / "embeddings" / "epoch_002.png").read_bytes()
        assert callback.last_path == tmp_path / "embeddings" / "epoch_002.png"
        assert f"Embedding plot: {callback.last_path}" in capsys.readouterr().out

    def test_subsample_10000_validation_features_stratified_seeded_and_said_in_the_title(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # t-SNE of 10,000 validation samples took ~55 s a picture: at most max_points are drawn, and the title says so.
        drawn: list[tuple[torch.Tensor, str]] = []

        def spy(points: np.ndarray, labels: Any, path: Any, title: str = "", class_names: Any = None) -> Path:
            drawn.append((torch.as_tensor(labels), title))
            return Path(path)

        monkeypatch.setattr(embedding_plot, "plot_embedding", spy)
        monkeypatch.setattr(embedding_plot.shutil, "copyfile", lambda *args: None)
        labels = torch.arange(10_000) % 10
        features = torch.eye(10)[labels] + 0.1 * torch.randn(10_000, 10, generator=torch.Generator().manual_seed(0))
        trainer, module = pl.Trainer(logger=False, enable_progress_bar=False), _Identity()
        for _ in range(2):  # the same sample every time (seeded)
            callback = EmbeddingPlot(method="pca", dirpath=str(tmp_path), max_points=2000, seed=5)
            for index, start in enumerate(range(0, 10_000, 500)):
                batch = (features[start : start + 500], labels[start : start + 500])
                callback.on_validation_batch_end(trainer, module, None, batch, index)
            callback.on_validation_epoch_end(trainer, module)
        (first, title), (second, _) = drawn
        assert title == "PCA of 2000 of 10000 validation features (class-balanced sample, seed 5), epoch 0"
        assert torch.bincount(first).tolist() == [200] * 10 and torch.equal(first, second)

    def test_lands_beside_the_checkpoints(self, tmp_path: Path) -> None:
        callback = EmbeddingPlot(every_n_epochs=1, method="pca", filename="e{epoch}.png")
        trainer = _fit(tmp_path, callback, max_epochs=1, logger=True, enable_checkpointing=True)
        checkpoint = trainer.checkpoint_callback
        assert isinstance(checkpoint, ModelCheckpoint) and checkpoint.dirpath is not None
        run_dir = Path(checkpoint.dirpath).parent
        assert run_dir != tmp_path
        assert (run_dir / "embeddings" / "e0.png").is_file() and (run_dir / "embeddings_latest.png").is_file()

    def test_validate_plots_too(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        callback = EmbeddingPlot(method="pca", dirpath=str(tmp_path / "plots"))
        trainer = pl.Trainer(
            accelerator="cpu", limit_val_batches=1, logger=False, enable_progress_bar=False, callbacks=[callback]
        )
        model = SupConModule(encoder="small_cnn", in_channels=1, num_classes=10, online=OnlineEval(knn_k=0))
        trainer.validate(model, datamodule=DigitsDataModule(batch_size=16, image_size=8), verbose=False)
        path = tmp_path / "plots" / "embeddings" / "epoch_000.png"
        assert path.is_file()
        assert f"Embedding plot: {path}" in capsys.readouterr().out

    def test_rejects_batches_without_labels(self, tmp_path: Path) -> None:
        callback = EmbeddingPlot(method="pca")
        model = SupConModule(encoder="small_cnn", in_channels=1, num_classes=10, online=OnlineEval(knn_k=0))
        with pytest.raises(ValueError, match=r"batches `\(images, labels\)`"):
            callback.on_validation_batch_end(pl.Trainer(logger=False), model, None, torch.zeros(2, 1, 8, 8), 0)


@pytest.mark.slow  # `make test-slow`; ~15 s, 2 processes
@pytest.mark.distributed
def test_ddp_gathers_the_points_of_every_rank(tmp_path: Path) -> None:
    """7 samples on 2 ranks: the sampler pads rank 1 with sample 0, so 8 points, all 7 samples among them."""
    proc = run_worker(Path(__file__).with_name("ddp_embedding_plot.py"), str(tmp_path), cwd=tmp_path)
    every = torch.load(tmp_path / "all" / "points.pt", weights_only=True)
    assert every["rank"] == 0 and every["features"].shape == (8, 2)
    assert sorted({int(x) for x in every["features"][:, 0]}) == list(range(7))
    assert torch.equal(every["features"][:, 1], -every["features"][:, 0])
    assert torch.equal(every["labels"], every["features"][:, 0].long() % 3)
    five = torch.load(tmp_path / "five" / "points.pt", weights_only=True)
    assert five["features"].shape == (5, 2) and torch.equal(five["labels"], five["features"][:, 0].long() % 3)
    assert (tmp_path / "all" / "embeddings" / "epoch_000.png").is_file()
    assert proc.stdout.count("Embedding plot: ") == 2  # rank zero only, once per callback
