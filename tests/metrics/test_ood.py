"""KNNOODScore: the functional kNN distance score and exact metrics, batch by batch, in any chunking."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor

from lightning_supcon.metrics import KNNOODScore, knn_ood_score, ood_metrics


def _data(seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """A bank of 2 Gaussian clusters; in-distribution queries from them, out-of-distribution ones from a third."""
    gen = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(3, 8, generator=gen)
    bank = centers[torch.arange(60) % 2] + torch.randn(60, 8, generator=gen)
    is_ood = torch.arange(45) % 3 == 2
    query = centers[torch.where(is_ood, 2, torch.arange(45) % 2)] + torch.randn(45, 8, generator=gen)
    return bank, query, is_ood


def _metric(bank: Tensor, query: Tensor, is_ood: Tensor, **kwargs: object) -> KNNOODScore:
    metric = KNNOODScore(**kwargs)  # type: ignore[arg-type]
    for part in bank.split(7):
        metric.update(part, bank=True)
    for part, part_is_ood in zip(query.split(10), is_ood.split(10), strict=True):
        metric.update(part, part_is_ood)
    return metric


class TestKNNOODScore:
    @pytest.mark.parametrize("k", [1, 10, 50, 500])
    @pytest.mark.parametrize("chunk_size", [1024, 4])
    def test_equals_the_functional_score_and_metrics(self, k: int, chunk_size: int) -> None:
        bank, query, is_ood = _data()
        metric = _metric(bank, query, is_ood, k=k, chunk_size=chunk_size, bank_chunk_size=16)
        scores, flags = metric.scores()
        expected = knn_ood_score(query, bank, k=k)
        assert torch.equal(scores, expected) and torch.equal(flags, is_ood)
        assert metric.compute() == ood_metrics(expected[~is_ood], expected[is_ood])

    def test_separates_a_far_cluster(self) -> None:
        result = _metric(*_data(), k=5).compute()
        assert result["auroc"] > 0.95 and result["fpr95"] < 0.2

    def test_a_bfloat16_bank(self) -> None:
        bank, query, is_ood = _data()
        scores, _ = _metric(bank, query, is_ood, k=5, bank_dtype="bfloat16").scores()
        assert torch.allclose(scores, knn_ood_score(query, bank, k=5), atol=2e-2)

    def test_reset(self) -> None:
        bank, query, is_ood = _data()
        metric = _metric(bank, query, is_ood, k=5)
        first = metric.compute()
        metric.reset()
        metric.update(bank, bank=True)
        metric.update(query, is_ood)
        assert metric.compute() == first

    def test_the_order_of_the_distributed_steps(self) -> None:
        # Ranks with 3 and 5 queries, chunk_size 4: each step takes 2 queries of each rank.
        metric = KNNOODScore(chunk_size=4)
        assert metric._step_order([3, 5]).tolist() == [0, 1, 3, 4, 2, 5, 6, 7]
        assert metric._step_order([0, 2]).tolist() == [0, 1]
        assert metric._step_order([4]).tolist() == [0, 1, 2, 3]

    @pytest.mark.parametrize(
        ("bank", "is_ood", "match"),
        [
            (True, torch.zeros(3), r"`is_ood` for queries and none for bank entries .* bank=True and is_ood=\(3,\)"),
            (False, None, "`is_ood` for queries and none for bank entries .* bank=False and is_ood=None"),
            (False, torch.zeros(2), r"Expected `features` \(B, D\) and `labels` \(B,\), but got \(3, 2\) and \(2,\)"),
        ],
    )
    def test_update_refuses(self, bank: bool, is_ood: Tensor | None, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            KNNOODScore().update(torch.zeros(3, 2), is_ood, bank=bank)

    def test_compute_refuses_queries_of_one_kind(self) -> None:
        metric = KNNOODScore()
        metric.update(torch.randn(4, 2), bank=True)
        metric.update(torch.randn(3, 2), torch.zeros(3, dtype=torch.bool))
        with pytest.raises(ValueError, match=r"`out_scores` of shape \(n,\) with n >= 1 .* but got \(0,\)"):
            metric.compute()

    def test_compute_refuses_is_ood_that_is_not_binary(self) -> None:
        metric = KNNOODScore()
        metric.update(torch.randn(4, 2), bank=True)
        metric.update(torch.randn(3, 2), torch.tensor([0, 1, 2]))
        with pytest.raises(ValueError, match=r"query labels in \[0, 2\), but got values in \[0, 2\]"):
            metric.compute()

    def test_compute_refuses_an_empty_bank(self) -> None:
        metric = KNNOODScore()
        metric.update(torch.randn(3, 2), torch.tensor([0, 1, 1]))
        with pytest.raises(ValueError, match="Expected both bank entries"):
            metric.compute()


class TestHasData:
    @pytest.mark.parametrize(
        ("bank", "is_ood", "expected"),
        [
            (True, [0, 1], True),
            (True, [0, 0], False),  # no out-of-distribution query
            (True, [1, 1], False),  # no in-distribution query
            (False, [0, 1], False),  # no bank
            (True, [0, 2], True),  # a bad value counts as out, so that compute raises on it
        ],
    )
    def test_counts_the_bank_and_both_kinds_of_queries(self, bank: bool, is_ood: list[int], expected: bool) -> None:
        metric = KNNOODScore(k=1)
        if bank:
            metric.update(torch.randn(3, 2), bank=True)
        metric.update(torch.randn(2, 2), torch.tensor(is_ood))
        assert metric.has_data() is expected

    def test_empty(self) -> None:
        assert KNNOODScore().has_data() is False

    def test_a_k_beyond_the_bank_is_said_once_and_scores_with_the_farthest(self) -> None:
        bank, query, is_ood = _data()
        metric = _metric(bank[:3], query, is_ood, k=5)
        with pytest.warns(UserWarning, match="k = 5 is more than the 3 bank entries, so each sample is scored by the"):
            assert metric.has_data()
        scores, _ = metric.scores()
        torch.testing.assert_close(scores, knn_ood_score(query, bank[:3], k=3), rtol=0, atol=1e-12)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert metric.has_data()  # said once


class TestStoredBankEntries:
    @pytest.mark.parametrize("bank_dtype", [None, "bfloat16"])
    def test_kept_as_given_and_scored_as_the_same_entries_stored_by_update(self, bank_dtype: str | None) -> None:
        bank, query, is_ood = _data()
        stored = torch.nn.functional.normalize(bank, dim=1).to(torch.bfloat16 if bank_dtype else torch.float32)
        shared = KNNOODScore(k=5, bank_dtype=bank_dtype)  # type: ignore[arg-type]
        shared.update(stored, bank=True, stored=True)
        shared.update(query, is_ood)
        assert shared.bank_features[0].data_ptr() == stored.data_ptr()  # no copy
        expected = KNNOODScore(k=5, bank_dtype=bank_dtype)  # type: ignore[arg-type]
        expected.update(stored.float(), bank=True)
        expected.update(query, is_ood)
        assert torch.equal(shared.scores()[0], expected.scores()[0])

    @pytest.mark.parametrize(
        ("features", "bank", "match"),
        [
            (torch.zeros(3, 2), True, r"`stored=True` with bank entries \(B, D\) of dtype torch.bfloat16, .*float32"),
            (torch.zeros(3, 2, dtype=torch.bfloat16), False, r"`stored=True` with bank entries .* but got bank=False"),
            (torch.zeros(3, dtype=torch.bfloat16), True, r"of shape \(3,\)"),
        ],
    )
    def test_refused(self, features: Tensor, bank: bool, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            KNNOODScore(bank_dtype="bfloat16").update(features, None if bank else torch.zeros(3), bank, stored=True)
