"""MemoryQueue and the MomentumEncoder that fills it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_supcon.models.queue import MemoryQueue, MomentumEncoder


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


def test_memory_queue_keeps_the_newest_entries() -> None:
    queue = MemoryQueue(size=2, dim=1)
    queue.push(torch.zeros(3, 1), torch.tensor([0, 1, 2]))
    _, labels = queue.entries()
    assert labels is not None and sorted(labels.tolist()) == [1, 2]
