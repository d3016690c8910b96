"""MemoryQueue and MomentumEncoder.

MemoryQueue: first in, first out; the newest entries survive; checkpoints hold it; bad sizes are rejected.

The reference is a plain Python list that appends every pushed row and keeps the last ``size`` of them.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from lightning_supcon.nets.queue import MemoryQueue, MomentumEncoder


def _rows(labels: list[int], dim: int = 2) -> tuple[Tensor, Tensor]:
    """Features whose every value is the row's label, so features and labels can be checked together."""
    labels_t = torch.tensor(labels)
    return labels_t[:, None].float().expand(-1, dim).clone(), labels_t


def _sorted_entries(queue: MemoryQueue) -> list[int]:
    features, labels = queue.entries()
    assert features is not None and labels is not None
    assert torch.equal(features, labels[:, None].float().expand_as(features)), "features and labels out of step"
    return sorted(labels.tolist())


class TestMemoryQueue:
    def test_empty_queue_has_no_entries(self) -> None:
        queue = MemoryQueue(size=3, dim=2)
        assert queue.entries() == (None, None)
        assert int(queue.filled) == 0 and int(queue.ptr) == 0

    def test_push_of_more_rows_than_it_holds_keeps_the_newest(self) -> None:
        queue = MemoryQueue(size=2, dim=2)
        queue.push(*_rows([0, 1, 2]))
        assert _sorted_entries(queue) == [1, 2]
        assert int(queue.filled) == 2

    def test_push_far_larger_than_the_queue_then_more(self) -> None:
        queue = MemoryQueue(size=3, dim=2)
        queue.push(*_rows(list(range(10))))
        assert _sorted_entries(queue) == [7, 8, 9]
        queue.push(*_rows([10]))
        assert _sorted_entries(queue) == [8, 9, 10]  # the oldest (7) went first

    def test_fills_in_order_before_it_wraps(self) -> None:
        queue = MemoryQueue(size=5, dim=2)
        queue.push(*_rows([3, 4]))
        _, labels = queue.entries()
        assert labels is not None and labels.tolist() == [3, 4]
        assert (int(queue.filled), int(queue.ptr)) == (2, 2)
        queue.push(*_rows([5, 6]))
        _, labels = queue.entries()
        assert labels is not None and labels.tolist() == [3, 4, 5, 6]
        assert (int(queue.filled), int(queue.ptr)) == (4, 4)

    def test_wraparound_overwrites_the_oldest_slots(self) -> None:
        queue = MemoryQueue(size=4, dim=2)
        queue.push(*_rows([0, 1, 2]))
        queue.push(*_rows([3, 4, 5]))  # 3 goes to slot 3, then 4, 5 over the oldest (0, 1) at slots 0, 1
        _, labels = queue.entries()
        assert labels is not None and labels.tolist() == [4, 5, 2, 3]
        assert (int(queue.filled), int(queue.ptr)) == (4, 2)

    @pytest.mark.parametrize("size", [1, 2, 3, 5])
    @pytest.mark.parametrize("pushes", [[1, 1, 1, 1], [2, 3, 1], [4], [3, 7, 2]])
    def test_matches_a_list_reference(self, size: int, pushes: list[int]) -> None:
        queue, reference, next_label = MemoryQueue(size=size, dim=2), [], 0
        for n in pushes:
            labels = list(range(next_label, next_label + n))
            next_label += n
            queue.push(*_rows(labels))
            reference = (reference + labels)[-size:]
            assert _sorted_entries(queue) == sorted(reference)
            assert int(queue.filled) == min(size, next_label)

    def test_pushed_features_are_detached_and_cast(self) -> None:
        queue = MemoryQueue(size=2, dim=3)
        features = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
        queue.push(features, torch.tensor([1, 2], dtype=torch.int32))
        stored, labels = queue.entries()
        assert stored is not None and labels is not None
        assert stored.dtype == torch.float32 and not stored.requires_grad
        assert labels.dtype == torch.long
        torch.testing.assert_close(stored, features.detach().float())

    def test_state_dict_holds_entries_and_position(self) -> None:
        queue = MemoryQueue(size=3, dim=2)
        queue.push(*_rows([1, 2, 3, 4]))
        restored = MemoryQueue(size=3, dim=2)
        restored.load_state_dict(queue.state_dict())
        assert set(queue.state_dict()) == {"features", "labels", "ptr", "filled"}
        restored.push(*_rows([5]))
        assert _sorted_entries(restored) == [3, 4, 5]

    @pytest.mark.parametrize(("size", "dim"), [(0, 2), (2, 0), (-1, 3)])
    def test_rejects_non_positive_sizes(self, size: int, dim: int) -> None:
        with pytest.raises(ValueError, match=f"size={size}, dim={dim}"):
            MemoryQueue(size=size, dim=dim)


class TestMomentumEncoder:
    def test_exponential_moving_average_and_buffers(self) -> None:
        encoder, head = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), nn.Linear(4, 2)
        ema = MomentumEncoder(encoder, head, momentum=0.9)
        before = [p.clone() for p in ema.parameters()]
        with torch.no_grad():
            for p in [*encoder.parameters(), *head.parameters()]:
                p.add_(1.0)
        encoder.train()(torch.randn(8, 3))  # moves the online BatchNorm statistics
        ema.update(encoder, head)
        for old, new, online in zip(before, ema.parameters(), [*encoder.parameters(), *head.parameters()], strict=True):
            torch.testing.assert_close(new, 0.9 * old + 0.1 * online)
        assert encoder[1].running_mean is not None and ema.encoder[1].running_mean is not None
        torch.testing.assert_close(ema.encoder[1].running_mean, encoder[1].running_mean)

    def test_frozen_keys(self) -> None:
        ema = MomentumEncoder(nn.Linear(3, 4), nn.Identity(), momentum=0.5)
        assert not any(p.requires_grad for p in ema.parameters())
        assert not ema(torch.randn(2, 3)).requires_grad

    @pytest.mark.parametrize("momentum", [-0.1, 1.0])
    def test_bad_momentum(self, momentum: float) -> None:
        with pytest.raises(ValueError, match=r"`momentum` in \[0, 1\)"):
            MomentumEncoder(nn.Linear(3, 4), nn.Identity(), momentum=momentum)
