"""MultilabelKNN: each label voted by the exp(s/T)-weighted neighbours, checked against a loop from the definition,
with the bank in blocks and in 2 gloo shards (one spawn, ~10 s)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import Tensor

from lightning_supcon.metrics import KNNAccuracy, MultilabelKNN, multilabel_metrics
from lightning_supcon.metrics.knn_functional import similarity_features
from tests.helpers import spawn_ranks

NUM_LABELS, WORLD = 3, 2
BANK_SPLIT, QUERY_SPLIT = (7, 41), (9, 14)  # rank 0's shard is smaller than k=10


def _data(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Seed 0: features in {0, 1}^3 (many exact ties); seed 1: Gaussian clusters. Labels multi-hot, some empty."""
    gen = torch.Generator().manual_seed(seed)
    num_bank, num_query = sum(BANK_SPLIT), sum(QUERY_SPLIT)
    bank_labels = torch.randint(0, 2, (num_bank, NUM_LABELS), generator=gen)
    query_labels = torch.randint(0, 2, (num_query, NUM_LABELS), generator=gen)
    if seed == 0:
        bank = torch.randint(0, 2, (num_bank, 3), generator=gen).float()
        bank[bank.sum(dim=1) == 0] = 1.0
        query = torch.randint(0, 2, (num_query, 3), generator=gen).float() + 0.25
    else:
        centres = torch.randn(2**NUM_LABELS, 8, generator=gen)
        code = torch.tensor([4, 2, 1])
        bank = centres[(bank_labels * code).sum(1)] + torch.randn(num_bank, 8, generator=gen)
        query = centres[(query_labels * code).sum(1)] + torch.randn(num_query, 8, generator=gen)
    return bank, bank_labels, query, query_labels


def reference_probabilities(query: Tensor, bank: Tensor, bank_labels: Tensor, k: int, temperature: float) -> Tensor:
    """The definition, one query and one label at a time: the ``k`` most similar bank entries (ties: lower index),
    ``p_l = sum_i exp(s_i / T) y_il / sum_i exp(s_i / T)``."""
    q, b = similarity_features(query), similarity_features(bank)
    out = torch.zeros(len(q), bank_labels.shape[1], dtype=torch.float64)
    for row in range(len(q)):
        similarity = [(float(q[row] @ b[j]), j) for j in range(len(b))]
        chosen = sorted(similarity, key=lambda pair: (-pair[0], pair[1]))[:k]
        weights = [math.exp(s / temperature) for s, _ in chosen]
        for label in range(bank_labels.shape[1]):
            votes = sum(w * float(bank_labels[j, label]) for w, (_, j) in zip(weights, chosen, strict=True))
            out[row, label] = votes / sum(weights)
    return out


def _expected(seed: int, k: int, temperature: float) -> dict[str, Tensor]:
    bank, bank_labels, query, query_labels = _data(seed)
    probabilities = reference_probabilities(query, bank, bank_labels, k, temperature)
    return multilabel_metrics(NUM_LABELS)(probabilities.float(), query_labels)


def _metric(bank: Tensor, bank_labels: Tensor, query: Tensor, query_labels: Tensor, **kw: Any) -> dict[str, Tensor]:
    metric = MultilabelKNN(NUM_LABELS, temperature=0.1, **kw)
    for part, part_labels in zip(bank.split(5), bank_labels.split(5), strict=True):  # batches of 5
        metric.update(part, part_labels, bank=True)
    metric.update(query, query_labels, bank=False)
    return metric.compute()


class TestMultilabelKNN:
    @pytest.mark.filterwarnings("ignore:No positive samples")
    @pytest.mark.parametrize("seed", [0, 1])
    @pytest.mark.parametrize(
        "kw", [{"k": 10}, {"k": 1, "chunk_size": 4, "bank_chunk_size": 3}, {"k": 200, "bank_chunk_size": 7}]
    )
    def test_matches_the_loop_reference(self, seed: int, kw: dict[str, Any]) -> None:
        got = _metric(*_data(seed), **kw)
        expected = _expected(seed, min(kw["k"], sum(BANK_SPLIT)), 0.1)
        assert set(got) == {"map", "f1", "accuracy"}
        assert 0 < float(got["accuracy"]) < 1  # neither all right nor all wrong: the comparison can fail
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, msg=name)

    @pytest.mark.filterwarnings("ignore:No positive samples")
    def test_far_neighbours_do_not_underflow(self) -> None:
        # exp(s / T) underflows to 0 for every neighbour at T=1e-4: the weights are normalised first.
        metric = MultilabelKNN(2, k=2, temperature=1e-4)
        metric.update(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1, 0], [0, 1]]), bank=True)
        metric.update(torch.tensor([[-1.0, -0.1]]), torch.tensor([[0, 1]]), bank=False)
        result = metric.compute()
        assert all(torch.isfinite(value) for value in result.values())
        assert float(result["accuracy"]) == 1.0  # the nearer entry, [0, 1], wins every label

    def test_inclusive_threshold_two_equal_neighbours_give_one_half(self) -> None:
        # Two equally similar neighbours, one with label 0: p_0 = 0.5 exactly, and the rule p >= 0.5 predicts it.
        metric = MultilabelKNN(num_labels=2, k=2, temperature=0.1)
        metric.update(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[1, 1], [0, 1]]), bank=True)
        metric.update(torch.tensor([[1.0, 0.0]]), torch.tensor([[1, 1]]), bank=False)
        result = metric.compute()
        assert (result["accuracy"].item(), result["f1"].item()) == (1.0, 1.0)

    def test_one_label_is_refused_at_construction(self) -> None:
        with pytest.raises(ValueError, match="Expected `num_labels` >= 2 for multi-label metrics, but got 1"):
            MultilabelKNN(num_labels=1)

    def test_keywords_reach_knn_accuracy_with_its_defaults(self) -> None:
        default = MultilabelKNN(num_labels=3)
        assert (default.k, default.temperature, default.chunk_size, default.bank_chunk_size) == (200, 0.07, 1024, 4096)
        assert default.bank_dtype is None
        given = MultilabelKNN(3, k=5, temperature=0.5, chunk_size=8, bank_dtype="bfloat16", bank_chunk_size=16)
        assert (given.k, given.temperature, given.chunk_size, given.bank_chunk_size) == (5, 0.5, 8, 16)
        assert given.bank_dtype == torch.bfloat16
        with pytest.raises(ValueError, match="Expected argument `k` to be a positive integer, but got 0"):
            MultilabelKNN(3, k=0)
        with pytest.raises(TypeError, match="positional"):
            MultilabelKNN(3, 5)  # type: ignore[call-arg]

    def test_single_label_metric_is_unchanged(self) -> None:
        metric = KNNAccuracy(num_classes=2, k=2, temperature=1.0)
        metric.update(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), torch.tensor([0, 0, 1]), bank=True)
        metric.update(torch.tensor([[1.0, 0.2], [0.1, 1.0]]), torch.tensor([0, 0]), bank=False)
        assert metric.compute() == {"top1": torch.tensor(0.5)}

    def test_bad_labels(self) -> None:
        metric = MultilabelKNN(3, k=2)
        with pytest.raises(ValueError, match=r"`labels` \(B, 3\), but got \(2, 4\) and \(2,\)"):
            metric.update(torch.randn(2, 4), torch.tensor([0, 1]), bank=True)
        metric.update(torch.randn(2, 4), torch.tensor([[0, 1, 2], [0, 0, 1]]), bank=True)
        metric.update(torch.randn(2, 4), torch.tensor([[0, 1, 1], [0, 0, 1]]), bank=False)
        with pytest.raises(ValueError, match=r"`bank_labels` in \[0, 2\), but got values in \[0, 2\]"):
            metric.compute()


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    results: dict[Any, Any] = {}
    for seed in (0, 1):
        bank, bank_labels, query, query_labels = _data(seed)
        b0, q0 = sum(BANK_SPLIT[:rank]), sum(QUERY_SPLIT[:rank])
        b1, q1 = b0 + BANK_SPLIT[rank], q0 + QUERY_SPLIT[rank]
        shard = (bank[b0:b1], bank_labels[b0:b1], query[q0:q1], query_labels[q0:q1])
        results[seed] = _metric(*shard, k=10, chunk_size=4)
        results[(seed, "local")] = _metric(*shard, k=10, sync_on_compute=False)
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.filterwarnings("ignore:No positive samples")
def test_two_shards_equal_one_process(tmp_path: Path) -> None:
    ranks = spawn_ranks(_worker, tmp_path, WORLD)
    for seed in (0, 1):
        expected = _metric(*_data(seed), k=10)
        for result in ranks:  # every rank returns the global result
            assert result[seed] == expected
        # Control: each rank's own shard and queries give another result.
        assert ranks[0][(seed, "local")] != expected
