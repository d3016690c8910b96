"""utils/distributed.py: the gather's forward and its backward under 2 gloo processes, and the 1-process identities.

The gradient claim (each rank gets its own slice of the rank-summed gradient) is checked on numbers small enough
to verify by hand: with ``x = ones(1)`` on both ranks, ``(gather(x) * [1, 2]).sum()`` on each rank is
``x_0 + 2 x_1``, whose sum over the 2 ranks has gradient 2 for ``x_0`` and 4 for ``x_1``. Everything runs in one
spawn; every rank writes what it saw, and the tests read both files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from lightning_supcon.utils import distributed
from tests.helpers import spawn_ranks

WORLD = 2
RAGGED = (3, 1)  # rows on rank 0 and rank 1


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    out: dict[str, Any] = {
        "is_distributed": distributed.is_distributed(),
        "world_size": distributed.world_size(),
        "rank": distributed.rank(),
        "sizes": distributed.gather_sizes(RAGGED[rank], torch.device("cpu")),
    }
    # The brief's example: x = ones(1) on each rank.
    x = torch.ones(1, requires_grad=True)
    (distributed.gather(x) * torch.tensor([1.0, 2.0])).sum().backward()
    out["ones_grad"] = x.grad
    # Ragged rows, a gradient that reaches the gather non-contiguous (through a transpose), and distinct weights
    # per rank so that a wrong slice or a missing sum over ranks shows.
    rows = torch.arange(RAGGED[rank] * 2, dtype=torch.float64).view(-1, 2) + 100 * rank
    rows.requires_grad_()
    gathered = distributed.gather(rows)  # (4, 2)
    out["ragged_forward"] = gathered.detach().clone()
    weight = torch.arange(8, dtype=torch.float64).view(2, 4) * (rank + 1)  # (2, 4): d(loss_r)/d(gathered) = weight.T
    (gathered.T * weight).sum().backward()
    out["ragged_grad"] = rows.grad
    out["plain"] = distributed.gather(torch.tensor([rank, 10 + rank]))  # no grad: the plain path
    out["plain_requires_grad"] = out["plain"].requires_grad
    out["reduced"] = distributed.all_reduce_sum(torch.tensor([1.0, float(rank)]))
    torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return spawn_ranks(_worker, tmp_path_factory.mktemp("gather"), WORLD)


@pytest.mark.distributed
class TestTwoProcesses:
    def test_process_group_queries(self, results: list[dict[str, Any]]) -> None:
        for rank, out in enumerate(results):
            assert out["is_distributed"] is True
            assert (out["world_size"], out["rank"]) == (WORLD, rank)
            assert out["sizes"] == list(RAGGED)

    def test_gather_backward_sums_over_ranks_and_keeps_own_slice(self, results: list[dict[str, Any]]) -> None:
        assert [out["ones_grad"].tolist() for out in results] == [[2.0], [4.0]]

    def test_ragged_gather_forward_in_rank_order(self, results: list[dict[str, Any]]) -> None:
        expected = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [100.0, 101.0]], dtype=torch.float64)
        for out in results:
            torch.testing.assert_close(out["ragged_forward"], expected, rtol=0, atol=0)

    def test_ragged_gather_backward(self, results: list[dict[str, Any]]) -> None:
        # Rank r's loss is sum(gathered * (r + 1) * W.T), W = arange(8).view(2, 4); summed over ranks: 3 * W.T.
        total = 3 * torch.arange(8, dtype=torch.float64).view(2, 4).T  # (4, 2)
        torch.testing.assert_close(results[0]["ragged_grad"], total[:3], rtol=0, atol=0)
        torch.testing.assert_close(results[1]["ragged_grad"], total[3:], rtol=0, atol=0)

    def test_plain_gather_and_all_reduce_sum(self, results: list[dict[str, Any]]) -> None:
        for out in results:
            assert out["plain"].tolist() == [0, 10, 1, 11]
            assert out["plain_requires_grad"] is False
            assert out["reduced"].tolist() == [2.0, 1.0]


class TestOneProcess:
    def test_identities_without_process_group(self) -> None:
        t = torch.randn(3, 2, requires_grad=True)
        assert distributed.gather(t) is t
        assert distributed.gather(t, sizes=[3]) is t
        assert not distributed.is_distributed()
        assert distributed.world_size() == 1 and distributed.rank() == 0
        assert distributed.gather_sizes(3, t.device) == [3]
        assert distributed.all_reduce_sum(t) is t
