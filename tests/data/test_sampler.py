"""ClassBalancedSampler: m samples of each of global_batch / m classes, one global batch split over the ranks."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import TensorDataset

from lightning_supcon.data import DigitsDataModule
from lightning_supcon.data.loading import EpochSampler, MappedDataset, ResumableLoader
from lightning_supcon.data.sampler import ClassBalancedSampler
from lightning_supcon.data.subsets import stratified_subset
from lightning_supcon.models.class_positives import anchors_with_class_positives
from tests.helpers import spawn_ranks

HUNDRED = np.repeat(np.arange(100), 20)  # 100 classes of 20 samples


def _batches(sampler: EpochSampler, batch: int) -> list[np.ndarray]:
    indices = np.array([index for index, _ in sampler])
    return list(indices[: len(indices) // batch * batch].reshape(-1, batch))  # whole batches, as drop_last


def _fraction(labels: np.ndarray) -> float:
    return float(anchors_with_class_positives(torch.as_tensor(labels)))


class TestClassBalancedSampler:
    def test_random_batches_leave_most_anchors_without_a_class_positive_balanced_none(self) -> None:
        """The issue's test: 100 classes, batch 32."""
        random = [_fraction(HUNDRED[b]) for b in _batches(EpochSampler(range(len(HUNDRED)), seed=0), 32)]
        assert np.mean(random) < 0.4  # about 1 - 0.99 ** 31 = 27% have one
        balanced = ClassBalancedSampler(HUNDRED, seed=0, batch_size=32, samples_per_class=4)
        assert [_fraction(HUNDRED[b]) for b in _batches(balanced, 32)] == [1.0] * (2000 // 32)

    @pytest.mark.parametrize(("batch", "m"), [(32, 4), (30, 2), (12, 3)])
    def test_each_batch_is_m_samples_of_batch_over_m_classes(self, batch: int, m: int) -> None:
        sampler = ClassBalancedSampler(HUNDRED, seed=1, batch_size=batch, samples_per_class=m)
        for indices in _batches(sampler, batch):
            assert len(set(indices.tolist())) == batch  # no sample twice
            assert sorted(np.bincount(HUNDRED[indices]).tolist())[-(batch // m) :] == [m] * (batch // m)
            assert len(np.unique(HUNDRED[indices])) == batch // m

    def test_classes_without_replacement_and_every_sample_before_a_repeat(self) -> None:
        sampler = ClassBalancedSampler(HUNDRED, seed=2, batch_size=32, samples_per_class=4)
        classes = [HUNDRED[b][::4] for b in _batches(sampler, 32)]  # each batch's 8 classes, in order
        first_round = np.concatenate(classes)[:96]  # 12 batches x 8 classes of the first order of 100
        assert len(set(first_round.tolist())) == 96
        drawn = np.concatenate(_batches(sampler, 32))
        in_class_0 = drawn[HUNDRED[drawn] == 0]
        assert len(set(in_class_0[:20].tolist())) == min(20, len(in_class_0))

    def test_length_is_defined(self) -> None:
        sampler = ClassBalancedSampler(HUNDRED, seed=0, batch_size=16, samples_per_class=4, num_replicas=2, rank=1)
        assert len(sampler) == (2000 // 32) * 16 == len(list(sampler))

    def test_set_epoch_reshuffles_and_seed_and_epoch_fix_the_order(self) -> None:
        a, b = (ClassBalancedSampler(HUNDRED, seed=4, batch_size=32, samples_per_class=4) for _ in range(2))
        assert a.indices() == b.indices()
        b.set_epoch(1)
        assert a.indices() != b.indices()
        a.set_epoch(1)
        assert a.indices() == b.indices()
        assert ClassBalancedSampler(HUNDRED, seed=5, batch_size=32, samples_per_class=4).indices() != b.indices()

    def test_ranks_split_one_global_batch(self) -> None:
        whole = ClassBalancedSampler(HUNDRED, seed=3, batch_size=32, samples_per_class=4).global_batches()
        ranks = [
            np.array(ClassBalancedSampler(HUNDRED, 3, 16, 4, num_replicas=2, rank=r).indices()).reshape(-1, 16)
            for r in range(2)
        ]
        assert np.array_equal(np.concatenate(ranks, axis=1), whole)

    def test_small_classes_are_skipped_with_a_warning(self) -> None:
        labels = np.concatenate([np.repeat(np.arange(10), 8), [10, 10, 11], [-1] * 5])
        with pytest.warns(
            UserWarning, match=r"2 class\(es\) with fewer than samples_per_class=4 samples \(3 samples\)"
        ):
            sampler = ClassBalancedSampler(labels, seed=0, batch_size=8, samples_per_class=4)
        assert set(labels[sampler.indices()].tolist()) <= set(range(10)) and len(sampler) == 80 // 8 * 8

    def test_resume_mid_epoch(self) -> None:
        data = MappedDataset(TensorDataset(torch.arange(len(HUNDRED)), torch.as_tensor(HUNDRED)), lambda x: x)

        def loader() -> ResumableLoader:
            sampler = ClassBalancedSampler(HUNDRED, seed=6, batch_size=32, samples_per_class=4)
            sampler.set_epoch(2)
            return ResumableLoader(data, batch_size=32, sampler=sampler)

        full = list(loader())
        first = loader()
        iterator = iter(first)
        for _ in range(5):
            next(iterator)
        resumed = loader()
        resumed.load_state_dict(first.state_dict())
        assert first.state_dict() == {"epoch": 2, "batches": 5}
        rest = [indices.tolist() for indices, _ in resumed]
        assert rest == [indices.tolist() for indices, _ in full[5:]] and len(rest) == 2000 // 32 - 5

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"batch_size": 30, "samples_per_class": 4}, r"dividing the global batch \(30 x 1 process\(es\) = 30\)"),
            ({"batch_size": 32, "samples_per_class": 0}, r"`samples_per_class` >= 1"),
            ({"batch_size": 25, "samples_per_class": 25}, r"needs 1 classes of 25 samples.*has 0 such classes"),
            ({"batch_size": 2048, "samples_per_class": 16}, r"needs 128 classes of 16 samples.*has 100 such classes"),
        ],
    )
    @pytest.mark.filterwarnings("ignore:.*fewer than samples_per_class")
    def test_errors(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            ClassBalancedSampler(HUNDRED, seed=0, **kwargs)


def test_a_class_with_exactly_samples_per_class_is_drawn() -> None:
    """``>=``, not ``>``: 3 classes of exactly 4 samples give one global batch of 8, and no "left out" warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler = ClassBalancedSampler(np.repeat(np.arange(3), 4), seed=0, batch_size=8, samples_per_class=4)
    assert len(sampler) == 8 and sorted(sampler.members) == [0, 1, 2]


class TestDataModuleSampler:
    def test_balanced_batches_from_the_datamodule(self) -> None:
        dm = DigitsDataModule(batch_size=20, image_size=8, n_views=2, sampler="balanced", samples_per_class=5)
        loader = dm.train_dataloader()
        assert isinstance(loader.sampler, ClassBalancedSampler) and len(loader) == 1437 // 20
        views, labels = next(iter(loader))
        assert views.shape == (20, 2, 1, 8, 8) and sorted(np.bincount(labels.numpy()).tolist())[-4:] == [5] * 4

    def test_bad_sampler(self) -> None:
        with pytest.raises(ValueError, match=r"`sampler` to be one of \('random', 'balanced'\).*got 'pk' and 4"):
            DigitsDataModule(sampler="pk")  # type: ignore[arg-type]


class _Strategy:
    def broadcast(self, obj: Any, src: int = 0) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]


def _rank_worker(rank: int, port: int, out_dir: str) -> None:
    """One DDP rank of the digits' DataModule with a 10% label fraction and balanced batches, unseeded: each rank
    starts from its own run seed, as an unseeded DDP run does before the DataModule broadcasts rank 0's."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ.pop("PL_GLOBAL_SEED", None)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(100 + rank)
    dm = DigitsDataModule(
        batch_size=10,
        image_size=8,
        n_views=1,
        augment_on="device",
        label_fraction=0.5,
        sampler="balanced",
        samples_per_class=5,
    )
    own_seed = dm.seed
    dm.trainer = SimpleNamespace(world_size=2, global_rank=rank, strategy=_Strategy())  # type: ignore[assignment]
    loader = dm.train_dataloader()
    train = dm._present("train")
    subset = train.images.indices.tolist()  # type: ignore[attr-defined]
    out = {"subset": subset, "own_seed": own_seed, "seed": dm.seed, "batches": []}
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        out["batches"].append([labels for _, labels in loader])
    out["indices"] = loader.sampler.indices()  # epoch 1
    torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.distributed
def test_ddp_ranks_share_the_label_subset_and_split_one_global_batch(tmp_path: Path) -> None:
    ranks = spawn_ranks(_rank_worker, tmp_path, 2)
    assert ranks[0]["own_seed"] != ranks[1]["own_seed"]  # unseeded ranks ...
    assert ranks[0]["subset"] == ranks[1]["subset"]  # ... share the label subset (seeded by subset_seed)
    labels = DigitsDataModule(image_size=8).dataset("train").labels
    assert np.array_equal(ranks[0]["subset"], stratified_subset(labels, 0.5, seed=0))
    assert ranks[0]["seed"] == ranks[1]["seed"] == ranks[0]["own_seed"]  # and rank 0's run seed
    subset_labels = labels[ranks[0]["subset"]]
    one = ClassBalancedSampler(subset_labels, ranks[0]["seed"], batch_size=20, samples_per_class=5)
    one.set_epoch(1)
    whole = one.global_batches()  # one process holding the global batch of 20
    assert np.array_equal(np.concatenate([np.reshape(r["indices"], (-1, 10)) for r in ranks], axis=1), whole)
    for epoch in range(2):
        one.set_epoch(epoch)
        expected = subset_labels[one.global_batches()]
        delivered = [torch.cat(pair).numpy() for pair in zip(*(r["batches"][epoch] for r in ranks), strict=True)]
        assert np.array_equal(np.stack(delivered), expected)
        assert all(_fraction(labels) == 1.0 for labels in delivered)
    assert not np.array_equal(ranks[0]["batches"][0][0], ranks[0]["batches"][1][0])  # set_epoch reshuffled
