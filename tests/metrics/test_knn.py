"""Weighted kNN: scores against a per-query loop written from Wu et al. 2018, Sec. 3.4, and the Metric's states."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from lightning_supcon.metrics.knn import KNNAccuracy, knn_predict


def _reference_scores(
    query: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int, k: int, temperature: float
) -> Tensor:
    """For each query: cosine similarity to every bank entry, the k largest vote exp(s / T) for their class."""
    scores = torch.zeros(query.shape[0], num_classes, dtype=torch.float64)
    for q in range(query.shape[0]):
        sims = []
        for n in range(bank.shape[0]):
            dot = sum(float(query[q, d]) * float(bank[n, d]) for d in range(bank.shape[1]))
            norm_q = math.sqrt(sum(float(v) ** 2 for v in query[q]))
            norm_b = math.sqrt(sum(float(v) ** 2 for v in bank[n]))
            sims.append((dot / (norm_q * norm_b), int(bank_labels[n])))
        sims.sort(key=lambda pair: -pair[0])
        for sim, label in sims[:k]:
            scores[q, label] += math.exp(sim / temperature)
    return scores


def _data(num_query: int, num_bank: int, dim: int, num_classes: int, seed: int = 0) -> tuple[Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=gen)
    bank_labels = torch.randint(num_classes, (num_bank,), generator=gen)
    query_labels = torch.randint(num_classes, (num_query,), generator=gen)
    bank = centers[bank_labels] + torch.randn(num_bank, dim, generator=gen)
    query = centers[query_labels] + torch.randn(num_query, dim, generator=gen)
    return query, query_labels, bank, bank_labels


def _accuracy_reference(scores: Tensor, labels: Tensor, top: int) -> float:
    """Fraction of queries whose class is among the ``top`` best scored, ties ranked by class index, and got a vote
    (the reference's votes weigh ``exp(s / T) > 0``, so a score of 0 means no vote)."""
    hits = 0
    for q in range(scores.shape[0]):
        ranked = sorted(range(scores.shape[1]), key=lambda c: -float(scores[q, c]))
        label = int(labels[q])
        hits += int(label in ranked[:top] and float(scores[q, label]) > 0)
    return hits / scores.shape[0]


class TestKnnPredict:
    @pytest.mark.parametrize("k", [1, 5, 200])
    @pytest.mark.parametrize("temperature", [0.07, 0.5])
    @pytest.mark.parametrize("chunk_size", [1, 7, 1024])
    def test_matches_reference(self, k: int, temperature: float, chunk_size: int) -> None:
        query, _, bank, bank_labels = _data(13, 40, 6, num_classes=4)
        scores = knn_predict(query, bank, bank_labels, 4, k=k, temperature=temperature, chunk_size=chunk_size)
        expected = _reference_scores(query, bank, bank_labels, 4, k=min(k, 40), temperature=temperature)
        torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=1e-6)

    def test_k_larger_than_bank_is_clamped(self) -> None:
        query, _, bank, bank_labels = _data(5, 9, 4, num_classes=3)
        torch.testing.assert_close(
            knn_predict(query, bank, bank_labels, 3, k=1000), knn_predict(query, bank, bank_labels, 3, k=9)
        )

    def test_invariant_to_feature_scale(self) -> None:
        query, _, bank, bank_labels = _data(5, 20, 4, num_classes=3)
        torch.testing.assert_close(
            knn_predict(query * 7, bank * 0.1, bank_labels, 3),
            knn_predict(query, bank, bank_labels, 3),
            rtol=1e-5,
            atol=0,
        )

    def test_empty_query(self) -> None:
        _, _, bank, bank_labels = _data(1, 5, 4, num_classes=3)
        assert knn_predict(torch.zeros(0, 4), bank, bank_labels, 3).shape == (0, 3)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"num_classes": 0}, "`num_classes` to be a positive integer, but got 0"),
            ({"k": 0}, "`k` to be a positive integer, but got 0"),
            ({"temperature": 0.0}, "`temperature` to be > 0, but got 0.0"),
            ({"chunk_size": 0}, "`chunk_size` to be a positive integer, but got 0"),
            ({"num_classes": 2}, r"`bank_labels` in \[0, 2\), but got values in \[0, 2\]"),
        ],
    )
    def test_rejects_bad_arguments(self, kwargs: dict, match: str) -> None:
        args = {"num_classes": 3} | kwargs
        bank_labels = torch.tensor([0, 1, 2])
        with pytest.raises(ValueError, match=match):
            knn_predict(torch.randn(2, 4), torch.randn(3, 4), bank_labels, **args)

    def test_rejects_bad_shapes(self) -> None:
        with pytest.raises(ValueError, match=r"same D, but got \(2, 4\) and \(3, 5\)"):
            knn_predict(torch.randn(2, 4), torch.randn(3, 5), torch.zeros(3, dtype=torch.long), 2)
        with pytest.raises(ValueError, match=r"`bank_labels` of shape \(3,\), but got \(2,\)"):
            knn_predict(torch.randn(2, 4), torch.randn(3, 4), torch.zeros(2, dtype=torch.long), 2)
        with pytest.raises(ValueError, match="non-empty `bank`"):
            knn_predict(torch.randn(2, 4), torch.randn(0, 4), torch.zeros(0, dtype=torch.long), 2)


class TestKNNAccuracy:
    @pytest.mark.parametrize("num_classes", [3, 10])
    @pytest.mark.parametrize("k", [3, 200])
    def test_matches_reference_over_several_updates(self, num_classes: int, k: int) -> None:
        query, query_labels, bank, bank_labels = _data(30, 50, 5, num_classes=num_classes, seed=1)
        metric = KNNAccuracy(num_classes, k=k, temperature=0.1, chunk_size=8)
        for part in torch.arange(50).tensor_split(3):
            metric.update(bank[part], bank_labels[part], bank=True)
        for part in torch.arange(30).tensor_split(4):
            metric.update(query[part], query_labels[part], bank=False)
        result = metric.compute()
        scores = _reference_scores(query, bank, bank_labels, num_classes, k=min(k, 50), temperature=0.1)
        assert result["top1"].item() == pytest.approx(_accuracy_reference(scores, query_labels, 1))
        assert 0 < result["top1"].item() < 1  # the test can fail both ways
        if num_classes >= 5:
            assert result["top5"].item() == pytest.approx(_accuracy_reference(scores, query_labels, 5))
        else:
            assert set(result) == {"top1"}

    def test_separable_clusters_are_perfect(self) -> None:
        _, query_labels, _, bank_labels = _data(20, 40, 16, num_classes=5)
        metric = KNNAccuracy(5, k=5)
        metric.update(torch.eye(16)[bank_labels] * 10, bank_labels, bank=True)
        metric.update(torch.eye(16)[query_labels], query_labels, bank=False)
        assert metric.compute() == {"top1": torch.tensor(1.0), "top5": torch.tensor(1.0)}

    def test_merge_state_concatenates_like_ddp(self) -> None:
        # What the "cat" reduction does across ranks: two halves merged equal the whole.
        query, query_labels, bank, bank_labels = _data(20, 30, 4, num_classes=6, seed=2)
        whole, left, right = (KNNAccuracy(6, k=10) for _ in range(3))
        whole.update(bank, bank_labels, bank=True)
        whole.update(query, query_labels, bank=False)
        left.update(bank[:13], bank_labels[:13], bank=True)
        left.update(query[:5], query_labels[:5], bank=False)
        right.update(bank[13:], bank_labels[13:], bank=True)
        right.update(query[5:], query_labels[5:], bank=False)
        left.merge_state(right)
        assert left.compute() == whole.compute()

    def test_synchronised_states(self) -> None:
        # The path DDP takes in `compute`, in one process: a fake all-gather (of query chunks and candidates) where
        # both "ranks" hold the same shard. The states stay this rank's lists: the bank is never gathered.
        query, query_labels, bank, bank_labels = _data(12, 20, 4, num_classes=5, seed=3)
        synced = KNNAccuracy(5, k=7, distributed_available_fn=lambda: True, dist_sync_fn=lambda t, group=None: [t, t])
        single = KNNAccuracy(5, k=7)
        for metric, copies in ((synced, 1), (single, 2)):
            for _ in range(copies):
                metric.update(bank, bank_labels, bank=True)
                metric.update(query, query_labels, bank=False)
        assert synced.compute() == single.compute()

    def test_the_bank_is_never_gathered(self) -> None:
        # Memory per rank ~ bank / world: compute gathers query chunks and k candidates per query, not bank shards.
        gathered: list[Tensor] = []

        def fake_gather(tensor: Tensor, group: object = None) -> list[Tensor]:
            gathered.append(tensor)
            return [tensor, tensor]

        query, query_labels, bank, bank_labels = _data(4, 500, 16, num_classes=5, seed=4)
        metric = KNNAccuracy(5, k=3, distributed_available_fn=lambda: True, dist_sync_fn=fake_gather)
        metric.update(bank, bank_labels, bank=True)
        metric.update(query, query_labels, bank=False)
        metric.compute()
        assert gathered and sum(t.numel() for t in gathered) < bank.numel() // 10
        assert max(t.shape[0] for t in gathered) < len(bank)

    def test_reset_and_detach(self) -> None:
        metric = KNNAccuracy(3)
        features = torch.randn(4, 2, requires_grad=True)
        metric.update(features, torch.tensor([0, 1, 2, 0]), bank=True)
        assert not metric.bank_features[0].requires_grad
        metric.reset()
        assert metric.bank_features == []

    def test_compute_without_bank_or_queries_raises(self) -> None:
        metric = KNNAccuracy(3)
        metric.update(torch.randn(4, 2), torch.tensor([0, 1, 2, 0]), bank=False)
        with pytest.raises(ValueError, match="got 0 bank and 1 query batches"):
            metric.compute()

    def test_rejects_query_labels_out_of_range(self) -> None:
        metric = KNNAccuracy(3)
        metric.update(torch.randn(4, 2), torch.tensor([0, 1, 2, 0]), bank=True)
        metric.update(torch.randn(2, 2), torch.tensor([0, 3]), bank=False)
        with pytest.raises(ValueError, match=r"query labels in \[0, 3\), but got values in \[0, 3\]"):
            metric.compute()

    def test_rejects_bad_update_shapes(self) -> None:
        with pytest.raises(ValueError, match=r"but got \(4, 2\) and \(3,\)"):
            KNNAccuracy(3).update(torch.randn(4, 2), torch.tensor([0, 1, 2]), bank=True)

    def test_rejects_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="`k` to be a positive integer, but got -1"):
            KNNAccuracy(3, k=-1)


class TestKNNAccuracyEdges:
    """A class with no vote is never a correct prediction; ties between classes go to the lower class index."""

    @staticmethod
    def _one_query(label: int, bank: list[list[float]], bank_labels: list[int], k: int) -> dict[str, Tensor]:
        metric = KNNAccuracy(num_classes=10, k=k)
        metric.update(torch.tensor(bank), torch.tensor(bank_labels), bank=True)
        metric.update(torch.tensor([[1.0, 0.0]]), torch.tensor([label]), bank=False)
        return metric.compute()

    @pytest.mark.parametrize("label", [1, 4, 5, 9])
    def test_class_without_vote_is_not_in_the_top5(self, label: int) -> None:
        result = self._one_query(label, [[1.0, 0.0]], [0], k=1)
        assert result == {"top1": torch.tensor(0.0), "top5": torch.tensor(0.0)}

    def test_the_voted_class_is_correct(self) -> None:
        assert self._one_query(0, [[1.0, 0.0]], [0], k=1) == {"top1": torch.tensor(1.0), "top5": torch.tensor(1.0)}

    @pytest.mark.parametrize(("label", "top5"), [(2, 1.0), (7, 1.0), (3, 0.0)])
    def test_every_voted_class_counts_and_only_those(self, label: int, top5: float) -> None:
        # Neighbours of classes 7 (nearest) and 2: both are top-5 predictions, class 3 got no vote.
        result = self._one_query(label, [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], [7, 2, 3], k=2)
        assert result["top5"] == torch.tensor(top5)
        assert result["top1"] == torch.tensor(float(label == 7))

    @pytest.mark.parametrize("order", [(0, 1), (1, 0)])
    def test_float64_features_rank_in_float64(self, order: tuple[int, int]) -> None:
        # Similarities 1 - 5e-9 and 1 - 1.25e-9: equal in float32, distinct in float64.
        entries = [([1.0, 1e-4], 0), ([1.0, 5e-5], 1)]  # class 1 is the nearer neighbour of [1, 0]
        bank = torch.tensor([entries[i][0] for i in order], dtype=torch.float64)
        bank_labels = torch.tensor([entries[i][1] for i in order])
        scores = knn_predict(torch.tensor([[1.0, 0.0]], dtype=torch.float64), bank, bank_labels, 2, k=1)
        assert scores.dtype == torch.float64
        assert scores.argmax(dim=1).tolist() == [1]

    def test_masking_of_classes_with_no_vote_a_vote_whose_weight_underflows_still_counts(self) -> None:
        # k=2 neighbours of classes 9 (similarity 0.3) and 4 (-0.9): at T=0.001 class 4's weight exp(-900) is 0 even
        # in float64 (the kNN's dtype; exp(-112.5) at T=0.008 would not underflow there and test nothing), yet it got
        # a vote and ranks second, above the 8 classes without one (0-3 have lower indices: unmasked, class 4 would
        # rank sixth and top-5 be 0); the third entry (class 2, similarity -1) is not a neighbour.
        assert math.exp(-0.9 / 0.001) == 0.0
        metric = KNNAccuracy(num_classes=10, k=2, temperature=0.001)
        bank = torch.tensor([[0.3, math.sqrt(1 - 0.09)], [-0.9, math.sqrt(1 - 0.81)], [-1.0, 0.0]])
        metric.update(bank, torch.tensor([9, 4, 2]), bank=True)
        metric.update(torch.tensor([[1.0, 0.0]]), torch.tensor([4]), bank=False)
        assert metric.compute() == {"top1": torch.tensor(0.0), "top5": torch.tensor(1.0)}
