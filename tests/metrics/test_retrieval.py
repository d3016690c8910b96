"""Retrieval metrics against a per-query loop written from Musgrave et al. 2020, Sec. 3.2, and against
pytorch-metric-learning's ``AccuracyCalculator`` (leave-one-out: the reference set is the query set)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from lightning_supcon.metrics.retrieval import RetrievalMetrics, retrieval_metrics

NAMES = ("precision_at_1", "r_precision", "map_at_r")


def _reference(embeddings: Tensor, labels: Tensor) -> dict[str, float]:
    """Every sample queries all others by cosine similarity (ties: lower index first); lone samples skipped."""
    num = embeddings.shape[0]
    unit = [[float(v) / math.sqrt(sum(float(w) ** 2 for w in row)) for v in row] for row in embeddings]
    totals = dict.fromkeys(NAMES, 0.0)
    queries = 0
    for q in range(num):
        others = [j for j in range(num) if j != q]
        r = sum(int(labels[j] == labels[q]) for j in others)
        if r == 0:
            continue
        queries += 1
        sims = {j: sum(a * b for a, b in zip(unit[q], unit[j], strict=True)) for j in others}
        ranked = sorted(others, key=lambda j: (-sims[j], j))
        rel = [int(labels[j] == labels[q]) for j in ranked]
        totals["precision_at_1"] += rel[0]
        totals["r_precision"] += sum(rel[:r]) / r
        totals["map_at_r"] += sum(sum(rel[:i]) / i * rel[i - 1] for i in range(1, r + 1)) / r
    return {name: total / queries if queries else math.nan for name, total in totals.items()}


def _clustered(num: int, dim: int, num_classes: int, noise: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(num_classes, (num,), generator=gen)
    centers = torch.randn(num_classes, dim, generator=gen)
    return centers[labels] + noise * torch.randn(num, dim, generator=gen), labels


class TestRetrievalMetricsFunctional:
    @pytest.mark.parametrize(("num", "num_classes", "noise"), [(30, 3, 1.0), (40, 12, 0.7), (25, 25, 0.5)])
    @pytest.mark.parametrize("chunk_size", [1, 8, 1024])
    def test_matches_reference(self, num: int, num_classes: int, noise: float, chunk_size: int) -> None:
        embeddings, labels = _clustered(num, 5, num_classes, noise)
        result = retrieval_metrics(embeddings, labels, chunk_size=chunk_size)
        expected = _reference(embeddings, labels)
        for name in NAMES:
            assert result[name].item() == pytest.approx(expected[name], abs=1e-6), name

    @pytest.mark.parametrize("chunk_size", [1, 8, 1024])
    def test_matches_reference_with_many_exact_ties(self, chunk_size: int) -> None:
        # 30 samples that are copies of 6 vectors: most similarities tie, inside the top R and at its cut.
        gen = torch.Generator().manual_seed(5)
        embeddings = torch.randn(6, 4, generator=gen)[torch.randint(6, (30,), generator=gen)]
        labels = torch.randint(3, (30,), generator=gen)
        result = retrieval_metrics(embeddings, labels, chunk_size=chunk_size)
        expected = _reference(embeddings, labels)
        for name in NAMES:
            assert result[name].item() == pytest.approx(expected[name], abs=1e-6), name

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_matches_pytorch_metric_learning(self, seed: int) -> None:
        accuracy_calculator = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
        distances = pytest.importorskip("pytorch_metric_learning.distances")
        inference = pytest.importorskip("pytorch_metric_learning.utils.inference")
        # 7 classes for 300 samples plus three lone samples (labels 100..102), which neither library queries.
        embeddings, labels = _clustered(300, 16, 7, noise=1.2, seed=seed)
        labels[:3] = torch.tensor([100, 101, 102])
        calculator = accuracy_calculator.AccuracyCalculator(
            exclude=("AMI", "NMI", "mean_average_precision", "mean_reciprocal_rank"),
            k="max_bin_count",
            device=torch.device("cpu"),
            knn_func=inference.CustomKNN(distances.CosineSimilarity()),
        )
        theirs = calculator.get_accuracy(embeddings, labels, embeddings, labels, ref_includes_query=True)
        ours = retrieval_metrics(embeddings, labels, chunk_size=64)
        assert set(theirs) == {"precision_at_1", "r_precision", "mean_average_precision_at_r"}
        assert 0.3 < theirs["mean_average_precision_at_r"] < 0.9  # neither trivial nor perfect
        assert ours["precision_at_1"].item() == pytest.approx(theirs["precision_at_1"], abs=1e-6)
        assert ours["r_precision"].item() == pytest.approx(theirs["r_precision"], abs=1e-6)
        assert ours["map_at_r"].item() == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)

    def test_perfect_and_worst(self) -> None:
        labels = torch.tensor([0, 0, 1, 1])
        perfect = retrieval_metrics(torch.eye(2)[labels], labels)
        worst = retrieval_metrics(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.9, 0.1], [-0.9, 0.1]]), labels)
        assert all(v.item() == 1.0 for v in perfect.values())
        assert all(v.item() == 0.0 for v in worst.values())

    def test_ties_ranked_by_index(self) -> None:
        # Three identical embeddings: for query 0, sample 1 (other class) and sample 2 (same class) tie.
        result = retrieval_metrics(torch.ones(3, 2), torch.tensor([0, 1, 0]))
        # query 0 ranks [1 (miss), 2 (hit)]: 0, 0, 0; query 2 ranks [0 (hit), 1]: 1, 1, 1; query 1 is alone.
        assert [result[name].item() for name in NAMES] == [0.5, 0.5, 0.5]
        swapped = retrieval_metrics(torch.ones(3, 2), torch.tensor([0, 0, 1]))  # both queries now hit first
        assert [swapped[name].item() for name in NAMES] == [1.0, 1.0, 1.0]

    def test_float64_embeddings_rank_in_float64(self) -> None:
        # From sample 0, sample 2 (its class) is nearer than sample 1: 1 - 1.25e-9 against 1 - 7.2e-9, which both
        # round to 1.0 in float32, where the tie would go to sample 1 (the lower index).
        embeddings = torch.tensor([[1.0, 0.0], [1.0, 1.2e-4], [1.0, 5e-5]], dtype=torch.float64)
        result = retrieval_metrics(embeddings, torch.tensor([0, 1, 0]))
        assert result["precision_at_1"].item() == 1.0

    def test_queries_without_relevant_samples(self) -> None:
        result = retrieval_metrics(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))
        assert all(math.isnan(v.item()) for v in result.values())

    def test_self_is_never_retrieved(self) -> None:
        # Without self-exclusion every query would find itself first and score 1.
        embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [1.0, 0.1]])
        assert retrieval_metrics(embeddings, torch.tensor([0, 0, 1, 1]))["precision_at_1"].item() == 0.0

    def test_rejects_bad_input(self) -> None:
        with pytest.raises(
            ValueError, match=r"`embeddings` \(N, D\) and `labels` \(N,\) or \(N, L\), but got \(4, 3\) and \(3,\)"
        ):
            retrieval_metrics(torch.randn(4, 3), torch.tensor([0, 1, 2]))
        with pytest.raises(ValueError, match="`chunk_size` to be a positive integer, but got 0"):
            retrieval_metrics(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), chunk_size=0)


class TestRetrievalMetrics:
    def test_matches_functional_over_several_updates(self) -> None:
        embeddings, labels = _clustered(50, 6, 4, noise=1.0)
        metric = RetrievalMetrics(chunk_size=16)
        for part in torch.arange(50).tensor_split(3):
            metric.update(embeddings[part], labels[part])
        result = metric.compute()
        expected = retrieval_metrics(embeddings, labels)
        assert result.keys() == expected.keys()
        for name in NAMES:
            torch.testing.assert_close(result[name], expected[name])

    def test_merge_state_concatenates_like_ddp(self) -> None:
        embeddings, labels = _clustered(30, 4, 3, noise=1.0, seed=3)
        whole, left, right = RetrievalMetrics(), RetrievalMetrics(), RetrievalMetrics()
        whole.update(embeddings, labels)
        left.update(embeddings[:11], labels[:11])
        right.update(embeddings[11:], labels[11:])
        left.merge_state(right)
        assert left.compute() == whole.compute()

    def test_synchronised_states(self) -> None:
        # The path DDP takes in `compute`, in one process: a fake all-gather where both "ranks" hold the same
        # shard. After the sync the states are single tensors, no longer lists.
        embeddings, labels = _clustered(20, 4, 3, noise=1.0, seed=4)
        synced = RetrievalMetrics(distributed_available_fn=lambda: True, dist_sync_fn=lambda t, group=None: [t, t])
        synced.update(embeddings[:7], labels[:7])
        synced.update(embeddings[7:], labels[7:])
        expected = retrieval_metrics(torch.cat([embeddings, embeddings]), torch.cat([labels, labels]))
        assert synced.compute() == expected

    @pytest.mark.filterwarnings("ignore:.*was called before the ``update`` method")
    def test_compute_before_update_raises(self) -> None:
        with pytest.raises(ValueError, match="at least one `update`"):
            RetrievalMetrics().compute()

    def test_rejects_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="`chunk_size` to be a positive integer, but got -2"):
            RetrievalMetrics(chunk_size=-2)
        with pytest.raises(ValueError, match=r"but got \(2, 3\) and \(3,\)"):
            RetrievalMetrics().update(torch.randn(2, 3), torch.tensor([0, 1, 2]))


class TestMultiHotLabels:
    def test_a_label_set_is_a_class(self) -> None:
        embeddings, classes = _clustered(40, 6, 5, noise=1.0)
        multi_hot = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 0], [0, 1, 1], [1, 0, 0]])[classes]  # (40, 3)
        expected = _reference(embeddings, [tuple(row) for row in multi_hot.tolist()])  # type: ignore[arg-type]
        assert 0 < expected["precision_at_1"] < 1
        got = retrieval_metrics(embeddings, multi_hot)
        for name, value in expected.items():
            assert got[name].item() == pytest.approx(value, abs=1e-6), name
        metric = RetrievalMetrics()
        metric.update(embeddings[:17], multi_hot[:17])
        metric.update(embeddings[17:], multi_hot[17:])
        assert metric.compute() == got
