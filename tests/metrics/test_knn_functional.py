"""Exact kNN candidates: ties by lower index, shards and blocks merged equal one scan of the whole bank, bit for bit."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from lightning_supcon.metrics.knn import KNNAccuracy, bank_torch_dtype
from lightning_supcon.metrics.knn_functional import (
    PAD_INDEX,
    exact_topk,
    knn_predict,
    merge_candidates,
    shard_candidates,
    similarity_features,
    weighted_votes,
)


def _tied_data(num_query: int, num_bank: int, num_classes: int, seed: int = 0) -> tuple[Tensor, ...]:
    """Features in {-1, 0, 1}^3: few distinct directions, so many bank entries tie, with different labels."""
    gen = torch.Generator().manual_seed(seed)
    bank = torch.randint(-1, 2, (num_bank, 3), generator=gen).float()
    bank[bank.abs().sum(dim=1) == 0] = 1.0  # no zero vectors
    query = torch.randint(-1, 2, (num_query, 3), generator=gen).float() + 0.5
    bank_labels = torch.randint(num_classes, (num_bank,), generator=gen)
    query_labels = torch.randint(num_classes, (num_query,), generator=gen)
    return query, query_labels, bank, bank_labels


def _reference_topk_columns(values: Tensor, k: int) -> Tensor:
    """Columns of the k largest per row, ties to the lower column: a stable descending sort, sorted back."""
    return values.sort(dim=1, descending=True, stable=True).indices[:, :k].sort(dim=1).values


class TestExactTopk:
    @pytest.mark.parametrize("k", [1, 2, 5, 9, 10])
    def test_ties_go_to_the_lower_column(self, k: int) -> None:
        values = torch.randint(0, 3, (50, 10), generator=torch.Generator().manual_seed(k)).float()
        top, cols = exact_topk(values, k)
        torch.testing.assert_close(cols.sort(dim=1).values, _reference_topk_columns(values, k), rtol=0, atol=0)
        torch.testing.assert_close(top, values.gather(1, cols), rtol=0, atol=0)

    def test_all_equal_takes_the_first_columns(self) -> None:
        assert exact_topk(torch.zeros(2, 6), 3)[1].sort(dim=1).values.tolist() == [[0, 1, 2], [0, 1, 2]]


def _split_candidates(query: Tensor, bank: Tensor, labels: Tensor, sizes: list[int], k: int, block_rows: int) -> tuple:
    """What the ranks do: candidates of each shard (bank split in order into ``sizes``), merged in shard order."""
    parts, offset = [], 0
    for shard, shard_labels in zip(bank.split(sizes), labels.split(sizes), strict=True):
        batches, batch_labels = list(shard.split(4)), list(shard_labels.split(4))  # stored as batches of 4
        parts.append(shard_candidates(query, batches, batch_labels, offset, k, block_rows))
        offset += shard.shape[0]
    return merge_candidates(parts, k)


class TestSimilarityFeatures:
    def test_products_are_exact_whatever_the_shapes(self) -> None:
        # A float32 GEMM's bits depend on the shapes (summation order); the rounded float64 product does not.
        gen = torch.Generator().manual_seed(0)
        query, bank = similarity_features(torch.randn(60, 512, generator=gen)), torch.randn(300, 512, generator=gen)
        whole = query @ similarity_features(bank).T
        blocks = torch.cat([query[:7] @ similarity_features(part).T for part in bank.split(37)], dim=1)
        assert torch.equal(blocks, whole[:7])
        rows, cols = query.tolist(), similarity_features(bank).tolist()
        exact = [
            [math.fsum(a * b for a, b in zip(rows[i], cols[j], strict=True)) for j in range(0, 300, 41)]
            for i in range(3)
        ]
        assert whole[:3, ::41].tolist() == exact
        cosine = query.float() @ torch.nn.functional.normalize(bank, dim=1).T
        torch.testing.assert_close(whole.float(), cosine, atol=1e-6, rtol=0)  # the rounding is below float32's

    def test_float64_is_not_rounded(self) -> None:
        x = torch.tensor([[1.0, 1e-9]], dtype=torch.float64)
        assert similarity_features(x)[0, 1].item() == pytest.approx(1e-9, rel=1e-12)


class TestShardedCandidates:
    @pytest.mark.parametrize("sizes", [[40], [13, 27], [3, 30, 7], [0, 25, 15], [1, 1, 38]])
    @pytest.mark.parametrize("k", [1, 6, 40])
    @pytest.mark.parametrize("block_rows", [3, 1000])
    def test_shards_and_blocks_equal_the_whole_bank(self, sizes: list[int], k: int, block_rows: int) -> None:
        query, _, bank, labels = _tied_data(17, 40, num_classes=5)
        query = similarity_features(query)
        whole = shard_candidates(query, [bank], [labels], offset=0, k=k, block_rows=10_000)
        split = _split_candidates(query, bank, labels, sizes, k, block_rows)
        for name, a, b in zip(("similarity", "index", "label"), whole, split, strict=True):
            assert torch.equal(a, b), name
        assert torch.equal(whole.bank_index, whole.bank_index.sort(dim=1).values)  # canonical order: by index
        scores_whole, votes_whole = weighted_votes(whole, 5, 0.1)
        scores_split, votes_split = weighted_votes(split, 5, 0.1)
        assert torch.equal(scores_whole, scores_split) and torch.equal(votes_whole, votes_split)

    def test_neighbours_are_the_reference_ones(self) -> None:
        # The k most similar, ties by lower bank index: a stable sort of the similarities.
        query, _, bank, labels = _tied_data(11, 30, num_classes=4, seed=1)
        query, normal_bank = similarity_features(query), similarity_features(bank)
        found = shard_candidates(query, [bank], [labels], offset=0, k=7, block_rows=4)
        assert torch.equal(found.bank_index, _reference_topk_columns(query @ normal_bank.T, 7))
        assert torch.equal(found.label, labels[found.bank_index])

    def test_a_small_shard_pads_to_k(self) -> None:
        query = similarity_features(torch.randn(3, 4))
        found = shard_candidates(query, [torch.randn(2, 4)], [torch.tensor([0, 1])], offset=5, k=4)
        assert found.bank_index[:, :2].tolist() == [[5, 6]] * 3
        assert (found.bank_index[:, 2:] == PAD_INDEX).all() and (found.similarity[:, 2:] == float("-inf")).all()
        empty = shard_candidates(query, [], [], offset=0, k=2)
        assert empty.similarity.shape == (3, 2) and (empty.bank_index == PAD_INDEX).all()

    def test_knn_predict_in_bank_blocks(self) -> None:
        query, _, bank, labels = _tied_data(20, 50, num_classes=6, seed=2)
        whole = knn_predict(query, bank, labels, 6, k=9, bank_chunk_size=50)
        assert torch.equal(knn_predict(query, bank, labels, 6, k=9, bank_chunk_size=7, chunk_size=3), whole)


class TestBankDtype:
    def test_names(self) -> None:
        assert bank_torch_dtype("float16") is torch.float16
        with pytest.raises(ValueError, match=r"`bank_dtype` to be one of \('float32', 'float16', 'bfloat16'\)"):
            bank_torch_dtype("int8")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="`bank_chunk_size` to be a positive integer, but got 0"):
            KNNAccuracy(3, bank_chunk_size=0)

    @pytest.mark.parametrize("bank_dtype", ["bfloat16", "float16"])
    def test_half_bank_halves_the_memory_and_keeps_the_accuracy(self, bank_dtype: str) -> None:
        gen = torch.Generator().manual_seed(0)
        centers = torch.randn(5, 32, generator=gen)
        bank_labels, query_labels = torch.randint(5, (200,), generator=gen), torch.randint(5, (40,), generator=gen)
        bank = 30 * (centers[bank_labels] + 2.0 * torch.randn(200, 32, generator=gen))  # large norms: normalised first
        query = centers[query_labels] + 2.0 * torch.randn(40, 32, generator=gen)
        full, half = KNNAccuracy(5, k=10), KNNAccuracy(5, k=10, bank_dtype=bank_dtype)  # type: ignore[arg-type]
        for metric in (full, half):
            metric.update(bank, bank_labels, bank=True)
            metric.update(query, query_labels, bank=False)
        assert half.bank_features[0].dtype == getattr(torch, bank_dtype)
        assert half.bank_features[0].element_size() * 2 == full.bank_features[0].element_size()
        expected = full.compute()
        assert 0.5 < expected["top1"] < 1
        torch.testing.assert_close(half.compute(), expected, atol=1 / 40 + 1e-6, rtol=0)  # at most one query flips

    def test_sync_on_compute_must_be_a_bool(self) -> None:
        with pytest.raises(ValueError, match="`sync_on_compute` to be a `bool` but got yes"):
            KNNAccuracy(3, sync_on_compute="yes")
