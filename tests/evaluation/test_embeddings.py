"""load_embeddings / check_pair: both file formats read back, and a clear error for every file that cannot be used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_supcon.evaluation import Embeddings, EmbeddingsError, check_pair, load_embeddings


def _save(path: Path, **tensors: torch.Tensor) -> Path:
    if path.suffix == ".npz":
        np.savez(path, **{key: value.numpy() for key, value in tensors.items()})
    else:
        torch.save(tensors, path)
    return path


class TestLoadEmbeddings:
    @pytest.mark.parametrize("suffix", [".pt", ".npz"])
    @pytest.mark.parametrize("key", ["features", "projections"])
    def test_reads_both_formats(self, tmp_path: Path, suffix: str, key: str) -> None:
        features, projections = torch.randn(6, 4), torch.randn(6, 2)
        labels = torch.tensor([3, 1, 3, 1, 0, 0], dtype=torch.int32)
        path = _save(tmp_path / f"e{suffix}", features=features, projections=projections, labels=labels)
        loaded = load_embeddings(path, key)
        torch.testing.assert_close(loaded.features, features if key == "features" else projections)
        assert loaded.labels.dtype == torch.int64 and loaded.labels.tolist() == labels.tolist()
        assert loaded.path == path

    def test_keeps_float64_and_widens_half(self, tmp_path: Path) -> None:
        path = _save(tmp_path / "a.pt", features=torch.randn(3, 2, dtype=torch.float64), labels=torch.arange(3))
        assert load_embeddings(path).features.dtype == torch.float64
        path = _save(tmp_path / "b.pt", features=torch.randn(3, 2).half(), labels=torch.arange(3))
        assert load_embeddings(path).features.dtype == torch.float32

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(
            EmbeddingsError, match=r"missing\.pt: no such file \(write it with `lightning-supcon predict`"
        ):
            load_embeddings(tmp_path / "missing.pt")

    def test_other_suffix(self, tmp_path: Path) -> None:
        with pytest.raises(EmbeddingsError, match=r"ending in \.pt or \.npz, but got .*model\.ckpt"):
            load_embeddings(tmp_path / "model.ckpt")

    @pytest.mark.parametrize("content", [b"", b"not a torch file", None], ids=["empty", "text", "a list"])
    def test_not_an_embeddings_file(self, tmp_path: Path, content: bytes | None) -> None:
        path = tmp_path / "x.pt"
        if content is None:
            torch.save([torch.zeros(2)], path)
        else:
            path.write_bytes(content)
        with pytest.raises(
            EmbeddingsError, match=r"Cannot read embeddings .*x\.pt: (not a file written by|expected a dict)"
        ):
            load_embeddings(path)

    def test_missing_key_lists_the_keys(self, tmp_path: Path) -> None:
        path = _save(tmp_path / "e.npz", features=torch.randn(2, 2), labels=torch.arange(2))
        with pytest.raises(EmbeddingsError, match=r"has no `projections`; it has: features, labels\."):
            load_embeddings(path, "projections")

    def test_a_state_dict_lists_a_few_keys(self, tmp_path: Path) -> None:
        path = _save(tmp_path / "e.pt", **{f"layer{i}.weight": torch.zeros(1) for i in range(122)})
        with pytest.raises(EmbeddingsError, match=r"it has: layer0\.weight, .* and 114 more\.$"):
            load_embeddings(path)

    def test_missing_labels(self, tmp_path: Path) -> None:
        path = _save(tmp_path / "e.pt", features=torch.randn(2, 2))
        with pytest.raises(EmbeddingsError, match=r"has no `labels` \(predict on a DataModule whose batches carry"):
            load_embeddings(path)

    def test_reads_multi_hot_labels(self, tmp_path: Path) -> None:
        labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # float 0/1 targets, as a multi-label data set's
        loaded = load_embeddings(_save(tmp_path / "e.pt", features=torch.randn(2, 4), labels=labels))
        assert (
            loaded.multilabel
            and loaded.labels.dtype == torch.int64
            and loaded.labels.tolist() == [[1, 0, 1], [0, 0, 0]]
        )

    @pytest.mark.parametrize(
        ("features", "labels", "match"),
        [
            (torch.randn(3), torch.arange(3), r"`features` of .* to be float \(N, D\)"),
            (torch.arange(6).view(3, 2), torch.arange(3), r"to be float \(N, D\), but got torch.int64"),
            (torch.randn(3, 2), torch.arange(2), r"integer `labels` \(N,\) = \(3,\)"),
            (torch.randn(3, 2), torch.full((3, 4), 2), r"multi-hot `labels` \(N, L\) of 0s and 1s"),
            (torch.randn(3, 2), torch.zeros(3, 1), r"or multi-hot 0/1 labels \(3, L >= 2\)"),
        ],
    )
    def test_bad_shapes(self, tmp_path: Path, features: torch.Tensor, labels: torch.Tensor, match: str) -> None:
        path = _save(tmp_path / "e.pt", features=features, labels=labels)
        with pytest.raises(EmbeddingsError, match=match):
            load_embeddings(path)


class TestCheckPair:
    def test_different_feature_sizes(self) -> None:
        train = Embeddings(torch.randn(4, 8), torch.arange(4), Path("train.pt"))
        test = Embeddings(torch.randn(4, 16), torch.arange(4), Path("val.pt"))
        with pytest.raises(EmbeddingsError, match=r"different feature sizes \(8 in train\.pt, 16 in val\.pt\)"):
            check_pair(train, test)

    def test_empty_split(self) -> None:
        train = Embeddings(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long), Path("train.pt"))
        with pytest.raises(EmbeddingsError, match=r"The training embeddings train\.pt have no rows"):
            check_pair(train, Embeddings(torch.randn(2, 8), torch.arange(2), Path("val.pt")))

    def test_names_the_second_split(self) -> None:
        train = Embeddings(torch.randn(4, 8), torch.arange(4), Path("train.pt"))
        with pytest.raises(EmbeddingsError, match=r"The out-of-distribution embeddings ood\.pt have no rows"):
            check_pair(
                train,
                Embeddings(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long), Path("ood.pt")),
                "out-of-distribution",
            )
        with pytest.raises(EmbeddingsError, match=r"training and out-of-distribution embeddings have different"):
            check_pair(train, Embeddings(torch.randn(2, 4), torch.arange(2), Path("ood.pt")), "out-of-distribution")
