"""Under 2 gloo processes each holding an uneven shard of the bank, KNNOODScore scores every query as one process.

Each rank keeps only its shard; ``compute`` gathers query chunks and merges the shards' candidates
(:class:`~lightning_supcon.metrics.KNNAccuracy`'s search). Checked per query: ``scores()`` returns every global
query's ``k``-th distance in the order of one process holding them all; with a shard smaller than ``k``, tied bank
entries, and chunks that leave one rank idle. One spawn for everything (~10 s, mostly the workers' imports).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import Tensor

from lightning_supcon.metrics import KNNOODScore
from tests.helpers import spawn_ranks

pytestmark = pytest.mark.distributed

WORLD = 2
BANK_SPLIT, QUERY_SPLIT = (7, 53), (9, 14)  # rank 0's shard is smaller than k=10 and k=50
SETTINGS: list[dict[str, Any]] = [
    {"k": 10, "chunk_size": 4},  # 2 queries per rank per step: rank 0 runs out of queries first
    {"k": 50, "chunk_size": 1024},
    {"k": 1, "chunk_size": 3, "bank_chunk_size": 5},
    {"k": 200, "chunk_size": 5, "bank_dtype": "bfloat16"},  # k > bank: the farthest entry
]


def _data(seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Seed 0: features in {0, 1}^3 (7 directions), so many bank entries tie; seed 1: Gaussian clusters, the
    out-of-distribution queries from a cluster of their own."""
    gen = torch.Generator().manual_seed(seed)
    num_bank, num_query = sum(BANK_SPLIT), sum(QUERY_SPLIT)
    is_ood = torch.randint(0, 2, (num_query,), generator=gen).bool()
    if seed == 0:
        bank = torch.randint(0, 2, (num_bank, 3), generator=gen).float()
        bank[bank.sum(dim=1) == 0] = 1.0
        query = torch.randint(0, 2, (num_query, 3), generator=gen).float() + 0.25
    else:
        centers = torch.randn(3, 8, generator=gen)
        bank = centers[torch.arange(num_bank) % 2] + 1.5 * torch.randn(num_bank, 8, generator=gen)
        query = centers[torch.where(is_ood, 2, torch.arange(num_query) % 2)] + 1.5 * torch.randn(
            num_query, 8, generator=gen
        )
    return bank, query, is_ood


def _shard(seed: int, rank: int) -> tuple[Tensor, Tensor, Tensor]:
    bank, query, is_ood = _data(seed)
    b0, q0 = sum(BANK_SPLIT[:rank]), sum(QUERY_SPLIT[:rank])
    b1, q1 = b0 + BANK_SPLIT[rank], q0 + QUERY_SPLIT[rank]
    return bank[b0:b1], query[q0:q1], is_ood[q0:q1]


def _result(bank: Tensor, query: Tensor, is_ood: Tensor, **kwargs: Any) -> dict[str, Any]:
    metric = KNNOODScore(**kwargs)
    for part in bank.split(5):
        metric.update(part, bank=True)
    metric.update(query, is_ood)
    scores, flags = metric.scores()
    return {"scores": scores, "is_ood": flags, "metrics": metric.compute()}


def _has_data(rank: int) -> list[bool]:
    """``has_data`` when the bank and the two kinds of queries are on different ranks, and when no rank holds an
    out-of-distribution query (rank 1 holds nothing): a collective, joined by a rank that holds nothing."""
    split, no_out = KNNOODScore(), KNNOODScore()
    if rank == 0:
        for metric in (split, no_out):
            metric.update(torch.randn(3, 2), bank=True)
            metric.update(torch.randn(2, 2), torch.zeros(2))
    else:
        split.update(torch.randn(1, 2), torch.ones(1))
    return [split.has_data(), no_out.has_data()]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    results: dict[Any, Any] = {}
    for seed in (0, 1):
        shard = _shard(seed, rank)
        for i, setting in enumerate(SETTINGS):
            results[(seed, i)] = _result(*shard, **setting)
    results["local"] = _result(*_shard(1, rank), k=10, sync_on_compute=False)
    results["has_data"] = _has_data(rank)
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[Any, Any]]:
    return spawn_ranks(_worker, tmp_path_factory.mktemp("ood_shards"), WORLD)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("setting", range(len(SETTINGS)))
def test_two_shards_score_every_query_as_one_process(distributed_results: list[dict], seed: int, setting: int) -> None:
    expected = _result(*_data(seed), **SETTINGS[setting])
    assert 0 < expected["metrics"]["auroc"] < 1  # the comparison can fail
    for result in distributed_results:  # every rank returns every query's score, in one process's order
        assert torch.equal(result[(seed, setting)]["is_ood"], expected["is_ood"])
        assert torch.allclose(result[(seed, setting)]["scores"], expected["scores"], atol=1e-12, rtol=0)
        assert torch.equal(result[(seed, setting)]["scores"], expected["scores"])  # the same bits, in fact
        for name, value in expected["metrics"].items():
            assert result[(seed, setting)]["metrics"][name].item() == pytest.approx(value.item(), abs=1e-12)


def test_the_scores_depend_on_the_query(distributed_results: list[dict]) -> None:
    # Control: a per-query comparison in the wrong order would fail, the scores are not all the same.
    assert len(set(_result(*_data(1), k=10)["scores"].tolist())) > 20


def test_local_only_differs(distributed_results: list[dict]) -> None:
    # Control: with sync_on_compute=False each rank scores its own queries against its own shard only.
    local = distributed_results[1]["local"]["scores"]
    assert len(local) == QUERY_SPLIT[1]
    assert not torch.equal(local, distributed_results[1][(1, 0)]["scores"][QUERY_SPLIT[0] :])


def test_has_data_is_decided_over_all_ranks(distributed_results: list[dict]) -> None:
    # Rank 1 alone holds the out-of-distribution query: both ranks can compute; with none, neither computes.
    assert [result["has_data"] for result in distributed_results] == [[True, False], [True, False]]
