"""The resumable training loader: orders from (seed, epoch), augmentations seeded per draw, positions restored."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch

from lightning_supcon.data import ClassBalancedSampler, DigitsDataModule, LabelledDataset
from lightning_supcon.data.loading import EpochSampler, MappedDataset, ResumableLoader, sample_seed


def _keys(sampler: EpochSampler) -> list[tuple[int, int]]:
    return list(sampler)


class TestEpochSampler:
    def test_order_from_seed_and_epoch(self) -> None:
        a, b = EpochSampler(range(50), seed=1), EpochSampler(range(50), seed=1)
        assert _keys(a) == _keys(b) and sorted(i for i, _ in _keys(a)) == list(range(50))
        b.set_epoch(1)
        assert [i for i, _ in _keys(a)] != [i for i, _ in _keys(b)]
        assert [i for i, _ in _keys(EpochSampler(range(50), seed=2))] != [i for i, _ in _keys(a)]

    def test_sample_seeds_depend_on_seed_epoch_and_position(self) -> None:
        sampler = EpochSampler(range(20), seed=5)
        sampler.set_epoch(3)
        assert [seed for _, seed in sampler] == [sample_seed(5, 3, position) for position in range(20)]
        ranks = [EpochSampler(range(20), seed=5, num_replicas=2, rank=r) for r in range(2)]
        seeds = [[seed for _, seed in rank] for rank in ranks]  # positions 0, 2, 4, ... and 1, 3, 5, ...
        assert seeds == [[sample_seed(5, 0, 2 * p + r) for p in range(10)] for r in range(2)]

    def test_views_seeded_by_position_not_by_sample(self) -> None:
        """Issue 23 item 10: a sample the balanced sampler draws twice in one epoch got bit-identical views."""
        labels = np.array([0] * 2 + [1] * 10)  # class 0 is drawn in every batch: its 2 samples repeat
        sampler = ClassBalancedSampler(labels, seed=0, batch_size=4, samples_per_class=2)
        keys = list(sampler)
        indices = [index for index, _ in keys]
        assert max(indices.count(i) for i in (0, 1)) >= 2  # the premise: repeats within the epoch
        data = MappedDataset(LabelledDataset(list(range(12)), labels), lambda _: torch.rand(3))
        views = [data[key][0] for key in keys]
        for i in (0, 1):
            drawn = [view for (index, _), view in zip(keys, views, strict=True) if index == i]
            assert all(not torch.equal(a, b) for a, b in itertools.combinations(drawn, 2))

    def test_resume_mid_epoch_at_a_later_epoch(self) -> None:
        sampler = EpochSampler(range(10), seed=0)
        sampler.set_epoch(3)
        whole = list(sampler)
        sampler.resume(epoch=3, position=4)
        assert list(sampler) == whole[4:]  # the same seeds too: they follow the position in the epoch

    def test_ranks_share_the_order(self) -> None:
        ranks = [[i for i, _ in EpochSampler(range(20), seed=0, num_replicas=2, rank=r)] for r in range(2)]
        assert not set(ranks[0]) & set(ranks[1]) and len(ranks[0]) == len(ranks[1]) == 10

    def test_resume_applies_once_and_only_in_its_epoch(self) -> None:
        sampler = EpochSampler(range(10), seed=0)
        sampler.set_epoch(2)
        order = _keys(sampler)
        sampler.resume(epoch=2, position=7)
        assert _keys(sampler) == order[7:] and _keys(sampler) == order
        sampler.resume(epoch=2, position=7)
        sampler.set_epoch(3)  # the saved epoch had ended: the next one starts at 0
        assert len(_keys(sampler)) == 10


class TestMappedDataset:
    def test_class_labels_as_int_multi_hot_labels_as_tensors(self) -> None:
        data = MappedDataset(
            [(torch.zeros(1), torch.tensor(3)), (torch.zeros(1), torch.tensor([1, 0, 1]))], lambda x: x
        )
        assert data[0][1] == 3 and isinstance(data[0][1], int)
        assert data[(1, 7)][1].tolist() == [1, 0, 1]

    def test_seeded_transform_leaves_the_global_generator_alone(self) -> None:
        data = MappedDataset([(torch.zeros(1), 0)] * 3, lambda x: x + torch.rand(1))
        torch.manual_seed(0)
        a = data[(1, 1234)][0]
        after = torch.rand(1)
        torch.manual_seed(0)
        assert torch.equal(data[(2, 1234)][0], a) and torch.equal(torch.rand(1), after)
        assert not torch.equal(data[(1, 99)][0], a)


def _loader(num_workers: int = 0, augment_on: Any = "cpu") -> ResumableLoader:
    dm = DigitsDataModule(batch_size=64, image_size=8, num_workers=num_workers, augment_on=augment_on)
    dm.seed = 7
    return dm.train_dataloader()


class TestResumableLoader:
    def test_rest_of_the_epoch_after_load_state_dict(self) -> None:
        full = list(_loader())
        first = _loader()
        iterator = iter(first)
        for _ in range(3):
            next(iterator)
        state = first.state_dict()
        assert state == {"epoch": 0, "batches": 3}
        resumed = _loader()
        resumed.load_state_dict(state)
        rest = list(resumed)
        assert len(rest) == len(full) - 3
        for (views, labels), (full_views, full_labels) in zip(rest, full[3:], strict=True):
            assert torch.equal(labels, full_labels) and torch.equal(views, full_views)
        assert resumed.state_dict() == {"epoch": 0, "batches": len(full)}
        assert len(list(resumed)) == len(full)  # the next iteration is a whole epoch again

    @pytest.mark.slow
    def test_augmentations_do_not_depend_on_the_worker_processes(self) -> None:
        main, workers = next(iter(_loader(0))), next(iter(_loader(2)))
        assert torch.equal(main[1], workers[1]) and torch.equal(main[0], workers[0])

    def test_rest_of_a_later_epoch_after_load_state_dict(self) -> None:
        """The resumable loader at an epoch other than 0 (a run preempted in its third epoch)."""
        full_loader = _loader()
        full_loader.sampler.set_epoch(2)
        full = list(full_loader)
        first = _loader()
        first.sampler.set_epoch(2)
        iterator = iter(first)
        for _ in range(2):
            next(iterator)
        assert first.state_dict() == {"epoch": 2, "batches": 2}
        resumed = _loader()
        resumed.sampler.set_epoch(2)
        resumed.load_state_dict(first.state_dict())
        rest = list(resumed)
        assert len(rest) == len(full) - 2
        for (views, labels), (full_views, full_labels) in zip(rest, full[2:], strict=True):
            assert torch.equal(labels, full_labels) and torch.equal(views, full_views)
        epoch_zero = _loader()
        assert not torch.equal(next(iter(epoch_zero))[1], full[0][1])  # another epoch: another order


class TestDataModuleState:
    def test_seed_and_position_restored_into_the_next_loader(self) -> None:
        dm = DigitsDataModule(batch_size=64, image_size=8)
        iterator = iter(dm.train_dataloader())
        expected = [next(iterator) for _ in range(3)][2]
        state = dm.state_dict()
        assert state["train_loader"] == {"epoch": 0, "batches": 3}
        again = DigitsDataModule(batch_size=64, image_size=8)
        again.seed = dm.seed + 1
        again.load_state_dict({**state, "train_loader": {"epoch": 0, "batches": 2}})
        assert again.seed == dm.seed
        views, labels = next(iter(again.train_dataloader()))
        assert torch.equal(labels, expected[1]) and torch.equal(views, expected[0])
