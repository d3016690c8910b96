"""ToNormalizedFloat's statistics twin: channel_statistics against NumPy, order-independent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_supcon.data.normalize import STD_FLOOR, ToNormalizedFloat, channel_statistics


class TestChannelStatistics:
    @pytest.mark.parametrize("channels", [1, 3])
    def test_against_numpy(self, channels: int) -> None:
        images = torch.randint(0, 256, (7, channels, 5, 4), dtype=torch.uint8)
        mean, std = channel_statistics(images)
        pixels = images.numpy().transpose(1, 0, 2, 3).reshape(channels, -1) / 255.0
        assert mean == tuple(np.round(pixels.mean(axis=1), 4))
        assert std == tuple(float(f"{v:.4g}") for v in pixels.std(axis=1, ddof=1))  # 4 significant digits

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


class TestMeasuredStatisticNeverDividesByZero:
    def test_constant_channel_is_floored_with_a_warning_naming_it(self) -> None:
        images = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
        images[:, 1] = 77  # a constant channel: its std is 0
        with pytest.warns(UserWarning, match=r"Channel 1's measured std 0 is below one grey level"):
            mean, std = channel_statistics(images)
        assert std[1] == pytest.approx(STD_FLOOR, rel=1e-3) and std[0] > 0.1 and std[2] > 0.1
        assert torch.isfinite(ToNormalizedFloat(mean, std)(images)).all()  # main: channel 1 all NaN

    def test_a_tiny_std_is_not_rounded_to_zero(self) -> None:
        """One pixel in 10,000 one grey level up: std 3.9e-5, which 4 decimals rounded to 0.0."""
        images = torch.zeros(1, 1, 100, 100, dtype=torch.uint8)
        images[0, 0, 0, 0] = 1
        exact = images.double().div(255).std().item()
        assert 0 < exact < 5e-5
        with pytest.warns(UserWarning, match=f"Channel 0's measured std {float(f'{exact:.4g}'):g} is below"):
            _, std = channel_statistics(images)
        assert std[0] == pytest.approx(STD_FLOOR, rel=1e-3)

    def test_a_std_above_the_floor_keeps_four_significant_digits(self) -> None:
        images = torch.zeros(1, 1, 10, 10, dtype=torch.uint8)
        images[0, 0, 0, :3] = 10  # std 0.006723: 4 decimals gave 0.0067
        _, std = channel_statistics(images)
        assert std[0] == float(f"{images.double().div(255).std().item():.4g}") and std[0] != round(std[0], 4)


class TestGivenStdIsADivisor:
    @pytest.mark.parametrize("bad", [0.0, -0.2, float("inf"), float("nan")])
    def test_not_positive_or_not_finite_is_refused_naming_the_channel(self, bad: float) -> None:
        with pytest.raises(ValueError, match=rf"positive finite number \(it divides\), but channel 2's is {bad}\."):
            ToNormalizedFloat((0.5, 0.5, 0.5), (0.2, 0.2, bad))

    def test_non_finite_mean_is_refused(self) -> None:
        with pytest.raises(ValueError, match=r"`mean` to be a finite number, but channel 0's is nan"):
            ToNormalizedFloat((float("nan"),), (0.2,))
