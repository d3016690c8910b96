"""ToNormalizedFloat's statistics twin: channel_statistics against NumPy, order-independent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_supcon.data.normalize import ToNormalizedFloat, channel_statistics


class TestChannelStatistics:
    @pytest.mark.parametrize("channels", [1, 3])
    def test_against_numpy(self, channels: int) -> None:
        images = torch.randint(0, 256, (7, channels, 5, 4), dtype=torch.uint8)
        mean, std = channel_statistics(images)
        pixels = images.numpy().transpose(1, 0, 2, 3).reshape(channels, -1) / 255.0
        assert mean == tuple(np.round(pixels.mean(axis=1), 4))
        assert std == tuple(np.round(pixels.std(axis=1, ddof=1), 4))

    def test_order_independent_and_normalises(self) -> None:
        images = torch.randint(0, 256, (9, 3, 6, 6), dtype=torch.uint8)
        mean, std = channel_statistics(images)
        assert channel_statistics(images.flip(0)) == (mean, std)
        x = ToNormalizedFloat(mean, std)(images)
        torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-3, rtol=0)

    @pytest.mark.parametrize("images", [torch.zeros(2, 1, 3, 3), torch.zeros(1, 3, 3, dtype=torch.uint8)])
    def test_errors(self, images: torch.Tensor) -> None:
        with pytest.raises(ValueError, match=r"Expected uint8 images \(N, C, H, W\)"):
            channel_statistics(images)
