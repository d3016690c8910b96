"""Under 2 gloo processes with ragged shards, KNNAccuracy and RetrievalMetrics equal one process holding all data.

Both metrics keep ``dist_reduce_fx="cat"`` states; torchmetrics gathers (and pads, for unequal sizes) them in
``compute``. Everything runs in one spawn; still slow (~10 s, mostly imports in the workers), so marked ``slow``:
the fast suite checks the same code path with a fake all-gather (``test_synchronised_states``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import Tensor

from lightning_supcon.metrics import KNNAccuracy, RetrievalMetrics
from tests.helpers import spawn_ranks

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WORLD = 2
NUM_CLASSES = 6
# Rows of the bank and of the queries each rank holds: ragged on purpose.
BANK_SPLIT, QUERY_SPLIT = (23, 17), (9, 14)


def _data() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(NUM_CLASSES, 8, generator=gen)
    bank_labels = torch.randint(NUM_CLASSES, (sum(BANK_SPLIT),), generator=gen)
    query_labels = torch.randint(NUM_CLASSES, (sum(QUERY_SPLIT),), generator=gen)
    bank = centers[bank_labels] + 1.5 * torch.randn(len(bank_labels), 8, generator=gen)
    query = centers[query_labels] + 1.5 * torch.randn(len(query_labels), 8, generator=gen)
    return bank, bank_labels, query, query_labels


def _compute(parts: list[tuple[Tensor, ...]]) -> dict[str, Tensor]:
    """Metrics of the given shards (bank, bank_labels, query, query_labels), each fed in one update."""
    knn, retrieval = KNNAccuracy(NUM_CLASSES, k=10), RetrievalMetrics(chunk_size=8)
    for bank, bank_labels, query, query_labels in parts:
        knn.update(bank, bank_labels, bank=True)
        knn.update(query, query_labels, bank=False)
        retrieval.update(query, query_labels)
    return {f"knn_{k}": v for k, v in knn.compute().items()} | retrieval.compute()


def _shard(rank: int) -> tuple[Tensor, ...]:
    bank, bank_labels, query, query_labels = _data()
    b0, q0 = sum(BANK_SPLIT[:rank]), sum(QUERY_SPLIT[:rank])
    b1, q1 = b0 + BANK_SPLIT[rank], q0 + QUERY_SPLIT[rank]
    return bank[b0:b1], bank_labels[b0:b1], query[q0:q1], query_labels[q0:q1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    result = _compute([_shard(rank)])
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Tensor]]:
    return spawn_ranks(_worker, tmp_path_factory.mktemp("dist_metrics"), WORLD)


def test_every_rank_gets_the_global_metrics(distributed_results: list[dict[str, Tensor]]) -> None:
    expected = _compute([_data()])
    assert set(expected) == {"knn_top1", "knn_top5", "precision_at_1", "r_precision", "map_at_r"}
    for result in distributed_results:
        assert result.keys() == expected.keys()
        for name, value in expected.items():
            torch.testing.assert_close(result[name], value, msg=name)


def test_local_shards_differ_from_the_global_set() -> None:
    # Control: if the states were not gathered, rank 0 would report its local metrics, which differ.
    local, expected = _compute([_shard(0)]), _compute([_data()])
    assert any(not torch.equal(local[name], expected[name]) for name in expected)
