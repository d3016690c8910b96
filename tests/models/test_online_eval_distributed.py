"""Every rank enters every collective of the evaluation, even a rank whose own shard is empty (2 gloo processes).

The kind of fault: a collective inside a rank-local branch. With ``unlabelled: unknown`` and a small
``label_fraction`` one rank's kNN bank shard can hold no labelled sample; a rank that decides on its own states
("no bank here: return {}") skips the gather the other rank waits in, and training hangs until the process-group
timeout. The same holds for the retrieval metrics of the linear probe (a rank that ran no evaluation batch) and for
the multi-label kNN (an empty shard must pad labels of the shape the other ranks send), and for ``EmbeddingPlot``'s
gather of the validation features (a rank that ran no validation batch). The process group here has
a short timeout, so a regression fails in seconds instead of hanging. Slow (a spawn, ~10 s).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import Tensor

from lightning_supcon.callbacks.embedding_plot import EmbeddingPlot
from lightning_supcon.metrics import RetrievalMetrics
from lightning_supcon.models.online_eval import OnlineEvaluation
from tests.helpers import spawn_ranks

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WORLD = 2
FEATURES = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
CLASSES = torch.tensor([0, 0, 1, 1])
MULTI_HOT = torch.tensor([[1, 0], [1, 1], [0, 1], [0, 1]])


def _identity(images: Tensor) -> Tensor:
    return images


class _Identity(pl.LightningModule):
    def forward(self, x: Tensor) -> Tensor:
        return x


def _results(rank: int, out_dir: Path) -> dict[str, Any]:
    """What each rank computes; rank 1's kNN bank shard is empty (unknown labels, or no batch at all)."""
    out: dict[str, Any] = {}
    # Class labels: rank 1's bank has only unknown labels (-1), so fill_bank stores nothing there.
    online = OnlineEvaluation(feature_dim=2, num_classes=2, probe=False, knn_k=2, knn_temperature=0.1)
    online.fill_bank(_identity, [(FEATURES, CLASSES if rank == 0 else torch.full((4,), -1))])
    online.eval_step(FEATURES, CLASSES, "val")
    out["knn"] = online.knn_results("val")
    # Multi-hot labels: rank 1 gets no bank batch at all.
    multi = OnlineEvaluation(feature_dim=2, num_classes=2, probe=False, knn_k=2, knn_temperature=0.1, multilabel=True)
    multi.fill_bank(_identity, [(FEATURES, MULTI_HOT)] if rank == 0 else [])
    multi.eval_step(FEATURES, MULTI_HOT, "val")
    out["multilabel_knn"] = multi.knn_results("val")
    # No rank saw a query: every rank answers {} together.
    quiet = OnlineEvaluation(feature_dim=2, num_classes=2, probe=False, knn_k=2)
    quiet.fill_bank(_identity, [(FEATURES, CLASSES)] if rank == 0 else [])
    out["knn_no_query"] = quiet.knn_results("val")
    # OOD: rank 0 holds every query (rank 1 ran no evaluation batch and has an empty OOD shard), rank 1 the bank.
    out["ood"], out["ood_no_out"] = _ood(rank, out_queries=True), _ood(rank, out_queries=False)
    # The linear probe's retrieval metrics: rank 1 ran no evaluation batch.
    retrieval = RetrievalMetrics()
    if rank == 0:
        retrieval.update(FEATURES, CLASSES)
    out["retrieval_has_data"] = retrieval.has_data()
    out["retrieval"] = retrieval.compute()
    # EmbeddingPlot: rank 1 ran no validation batch (its trainer is a single-process one, so both ranks draw).
    plot = EmbeddingPlot(method="pca", dirpath=str(out_dir / f"plot{rank}"))
    trainer, module = pl.Trainer(logger=False, enable_progress_bar=False), _Identity()
    if rank == 0:
        plot.on_validation_batch_end(trainer, module, None, (torch.cat([FEATURES, -FEATURES]), CLASSES.repeat(2)), 0)
    plot.on_validation_epoch_end(trainer, module)
    out["plot"] = plot.last_path is not None and plot.last_path.is_file()
    return out


def _ood(rank: int, out_queries: bool) -> dict[str, Tensor]:
    online = OnlineEvaluation(feature_dim=2, num_classes=2, probe=False, knn_k=0, ood_k=2)
    online.begin_epoch(ood_split=True)
    if rank == 0:
        online.eval_step(FEATURES, torch.tensor([0, -1, 1, 1]), "val")
        online.score_ood(_identity, [(-FEATURES[:3], torch.full((3,), -1))] if out_queries else [])
    online.fill_bank(_identity, [(FEATURES * 2, CLASSES)] if rank == 1 else [])
    return online.ood_results("val")


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # A short timeout: a rank left waiting in a collective fails the test instead of hanging it.
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=30))
    torch.set_num_threads(1)
    torch.save(_results(rank, Path(out_dir)), Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return spawn_ranks(_worker, tmp_path_factory.mktemp("empty_shard"), WORLD)


def _one_process_knn(multilabel: bool) -> dict[str, Tensor]:
    online = OnlineEvaluation(2, 2, probe=False, knn_k=2, knn_temperature=0.1, multilabel=multilabel)
    labels = MULTI_HOT if multilabel else CLASSES
    online.fill_bank(_identity, [(FEATURES, labels)])
    for _ in range(WORLD):  # both ranks' queries
        online.eval_step(FEATURES, labels, "val")
    return online.knn_results("val")


class TestCollectiveInRankLocalBranch:
    def test_knn_with_an_unlabelled_bank_shard(self, results: list[dict[str, Any]]) -> None:
        for result in results:
            assert result["knn"] == {"val/knn_top1": torch.tensor(1.0)}

    def test_multilabel_knn_with_an_empty_bank_shard(self, results: list[dict[str, Any]]) -> None:
        expected = _one_process_knn(multilabel=True)
        assert sorted(expected) == ["val/knn_accuracy", "val/knn_f1", "val/knn_map"]
        for result in results:
            assert result["multilabel_knn"].keys() == expected.keys()
            for name, value in expected.items():
                torch.testing.assert_close(result["multilabel_knn"][name], value, msg=name)

    def test_no_query_on_any_rank_gives_no_result_on_every_rank(self, results: list[dict[str, Any]]) -> None:
        assert [result["knn_no_query"] for result in results] == [{}, {}]

    def test_ood_with_a_rank_without_queries_and_a_rank_without_bank(self, results: list[dict[str, Any]]) -> None:
        # One process holding it all; the ranks compute it together and every rank gets the same values.
        online = OnlineEvaluation(feature_dim=2, num_classes=2, probe=False, knn_k=0, ood_k=2)
        online.begin_epoch(ood_split=True)
        online.eval_step(FEATURES, torch.tensor([0, -1, 1, 1]), "val")
        online.score_ood(_identity, [(-FEATURES[:3], torch.full((3,), -1))])
        online.fill_bank(_identity, [(FEATURES * 2, CLASSES)])
        expected = online.ood_results("val")
        assert sorted(expected) == ["val/ood_aupr_in", "val/ood_aupr_out", "val/ood_auroc", "val/ood_fpr95"]
        for result in results:
            assert result["ood"] == expected
        assert [result["ood_no_out"] for result in results] == [{}, {}]  # no OOD query on any rank: none computes

    def test_retrieval_with_a_rank_that_saw_nothing(self, results: list[dict[str, Any]]) -> None:
        metric = RetrievalMetrics()
        metric.update(FEATURES, CLASSES)
        expected = metric.compute()
        for result in results:
            assert result["retrieval_has_data"] is True
            for name, value in expected.items():
                torch.testing.assert_close(result["retrieval"][name], value, msg=name)

    def test_embedding_plot_with_a_rank_that_ran_no_batch(self, results: list[dict[str, Any]]) -> None:
        assert [result["plot"] for result in results] == [True, True]
