"""The batched kornia backend: formats, per-sample randomness, and the same statistics as the torchvision backend.

The statistical tests build both backends from one ``AugmentRecipe``, draw a few hundred views through each,
measure one property of each view (crop area and aspect, flip, brightness factor, colour, grayscale, blur, rotation
and coverage of the digits warp) and compare the two distributions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2

from lightning_supcon.data.device_augment import DeviceMultiViewAugment
from lightning_supcon.data.digits import DIGITS_RECIPE
from lightning_supcon.data.normalize import ToNormalizedFloat
from lightning_supcon.data.recipe import AugmentRecipe
from lightning_supcon.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, supcon_transform

N = 500  # views per path in the statistical tests
ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # normalisation that leaves outputs in [0, 1]
IDENTITY_CROP: dict[str, Any] = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0), "flip": False}
NO_COLOUR: dict[str, Any] = {"jitter_p": 0.0, "grayscale_p": 0.0}


def _both(image: np.ndarray, size: int, n: int = N, **kwargs: Any) -> tuple[Tensor, Tensor]:
    """``n`` views of one HWC uint8 image from both backends of ``AugmentRecipe(**kwargs)``: two ``(n, C, S, S)``."""
    pil = Image.fromarray(image)
    recipe = AugmentRecipe(**kwargs)
    tf = supcon_transform(size, ZERO, ONE, recipe)
    cpu = torch.stack([tf(pil) for _ in range(n)])
    aug = DeviceMultiViewAugment(size, ZERO, ONE, n_views=n, recipe=recipe)
    device = aug(torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0))[0]
    return cpu, device


def _ramp(size: int) -> np.ndarray:
    """R grows left to right, G top to bottom, B constant."""
    ramp = np.linspace(0, 255, size)
    return np.stack(
        [np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.full((size, size), 128)], -1
    ).astype(np.uint8)


def _assert_same_distribution(a: Tensor, b: Tensor, tol: float, quantile_tol: float | None = None) -> None:
    """Means within ``tol``, deciles 1, 3, 5, 7, 9 within ``quantile_tol`` (default ``2 * tol``)."""
    qs = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    torch.testing.assert_close(a.mean(), b.mean(), atol=tol, rtol=0)
    quantile_tol = 2 * tol if quantile_tol is None else quantile_tol
    torch.testing.assert_close(torch.quantile(a, qs), torch.quantile(b, qs), atol=quantile_tol, rtol=0)


def _angle(views: Tensor) -> Tensor:
    """Orientation in degrees of the principal axis of each ``(n, H, W)`` intensity image (image moments)."""
    h, w = views.shape[-2:]
    y, x = torch.meshgrid(torch.arange(h, dtype=views.dtype), torch.arange(w, dtype=views.dtype), indexing="ij")
    mass = views.sum((1, 2))
    dx = x - ((views * x).sum((1, 2)) / mass)[:, None, None]
    dy = y - ((views * y).sum((1, 2)) / mass)[:, None, None]
    mu20, mu02, mu11 = (views * dx**2).sum((1, 2)), (views * dy**2).sum((1, 2)), (views * dx * dy).sum((1, 2))
    return torch.rad2deg(0.5 * torch.atan2(2 * mu11, mu20 - mu02))


class TestFormats:
    @pytest.mark.parametrize("n_views", [1, 2, 4])
    @pytest.mark.parametrize("channels", [1, 3])
    def test_shape(self, n_views: int, channels: int) -> None:
        aug = DeviceMultiViewAugment(16, (0.5,) * channels, (0.25,) * channels, n_views=n_views)
        out = aug(torch.randint(0, 256, (5, channels, 20, 24), dtype=torch.uint8))
        assert out.shape == (5, n_views, channels, 16, 16) and out.dtype == torch.float32
        if n_views > 1:
            assert not torch.equal(out[:, 0], out[:, 1])

    def test_uint8_and_float_inputs_agree(self) -> None:
        images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
        aug = DeviceMultiViewAugment(12, IMAGENET_MEAN, IMAGENET_STD, recipe=AugmentRecipe(blur_p=0.5))
        torch.manual_seed(1)
        a = aug(images)
        torch.manual_seed(1)
        b = aug(images.float() / 255)
        torch.testing.assert_close(a, b)

    def test_per_sample_parameters(self) -> None:
        images = torch.from_numpy(_ramp(32)).permute(2, 0, 1).unsqueeze(0).repeat(8, 1, 1, 1)
        out = DeviceMultiViewAugment(16, ZERO, ONE, n_views=1)(images)[:, 0]
        assert len({tuple(view.flatten()[:40].tolist()) for view in out}) == 8

    @pytest.mark.parametrize("n_views", [2, 3])
    def test_each_samples_views_come_from_that_sample(self, n_views: int) -> None:
        """Constant images, one grey value per sample: crop, flip and blur keep a constant image constant, so every
        view of sample i has sample i's value (a mix-up of views across samples, e.g. ``repeat`` for
        ``repeat_interleave``, gives another sample's value)."""
        values = torch.tensor([0, 40, 90, 160, 255], dtype=torch.uint8)
        images = values.view(-1, 1, 1, 1).expand(-1, 3, 12, 12).contiguous()  # (5, 3, 12, 12)
        recipe = AugmentRecipe(colour="none", blur_p=1.0)
        aug = DeviceMultiViewAugment(8, mean=(0.5,) * 3, std=(0.25,) * 3, n_views=n_views, recipe=recipe)
        views = aug(images)  # (5, V, 3, 8, 8)
        expected = (values.double() / 255 - 0.5) / 0.25
        for i in range(len(values)):
            for v in range(n_views):
                assert views[i, v].mean().item() == pytest.approx(expected[i].item(), abs=1e-4), (i, v)

    def test_one_channel_has_no_colour_steps(self) -> None:
        assert len(DeviceMultiViewAugment(16, (0.5,), (0.2,)).colour) == 0
        assert len(DeviceMultiViewAugment(16, ZERO, ONE).colour) == 2
        assert len(DeviceMultiViewAugment(16, ZERO, ONE, recipe=AugmentRecipe(blur_p=0.5)).colour) == 3

    @pytest.mark.parametrize(
        ("images", "match"),
        [
            (torch.zeros(2, 1, 8, 8), r"shape \(B, 3, H, W\), but got \(2, 1, 8, 8\)"),
            (torch.zeros(3, 8, 8), r"shape \(B, 3, H, W\)"),
            (torch.zeros(2, 3, 8, 8, dtype=torch.int32), "uint8 or float images, but got torch.int32"),
        ],
    )
    def test_bad_input(self, images: Tensor, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            DeviceMultiViewAugment(8, ZERO, ONE)(images)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"n_views": 0}, "`n_views` to be >= 1, but got 0"),
            ({"jitter_p": 2.0}, r"`jitter_p` to be in \[0, 1\], but got 2.0"),
            ({"scale": (0.9, 0.1)}, "`scale` to be a pair"),
            ({"degrees": -1.0}, r"`degrees` >= 0 and `translate` in \[0, 1\], but got -1.0"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            n_views = kwargs.pop("n_views", 2)
            DeviceMultiViewAugment(8, ZERO, ONE, n_views=n_views, recipe=AugmentRecipe(**kwargs))


class TestToNormalizedFloat:
    def test_equals_eval_transform(self) -> None:
        images = torch.randint(0, 256, (6, 3, 10, 10), dtype=torch.uint8)
        expected = torch.stack([eval_transform(10, IMAGENET_MEAN, IMAGENET_STD)(image) for image in images])
        torch.testing.assert_close(ToNormalizedFloat(IMAGENET_MEAN, IMAGENET_STD)(images), expected)

    def test_length_mismatch(self) -> None:
        with pytest.raises(ValueError, match=r"equal length, but got \(0.5,\) and \(0.2, 0.2\)"):
            ToNormalizedFloat((0.5,), (0.2, 0.2))


class TestSameStatisticsAsPIL:
    def test_crop_area_and_flip(self) -> None:
        cpu, device = _both(_ramp(48), 32, n=1500, **NO_COLOUR)

        def width_height_flipped(views: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            red, green = views[:, 0], views[:, 1]
            dx = red[:, :, -1].mean(1) - red[:, :, 0].mean(1)
            dy = green[:, -1, :].mean(1) - green[:, 0, :].mean(1)
            return dx.abs() * dy.abs(), dx.abs() / dy.abs(), (dx < 0).float()

        (area_c, aspect_c, flip_c), (area_d, aspect_d, flip_d) = width_height_flipped(cpu), width_height_flipped(device)
        _assert_same_distribution(area_c, area_d, tol=0.025, quantile_tol=0.04)
        _assert_same_distribution(aspect_c.log(), aspect_d.log(), tol=0.04)
        # scale (0.2, 1): uniform area fraction, mean 0.6; the ramp measure sees (S - 1) / S of each side
        assert 0.5 < area_c.mean() < 0.6 and 0.15 < torch.quantile(area_c, 0.01) < 0.22
        torch.testing.assert_close(flip_c.mean(), flip_d.mean(), atol=0.09, rtol=0)
        assert 0.4 < flip_d.mean() < 0.6

    def test_brightness_factor(self) -> None:
        gray = np.full((16, 16, 3), 128, dtype=np.uint8)  # contrast, saturation and hue leave gray unchanged
        cpu, device = _both(gray, 16, **IDENTITY_CROP, grayscale_p=0.0)
        factor_c, factor_d = cpu.mean((1, 2, 3)) * 255 / 128, device.mean((1, 2, 3)) * 255 / 128
        _assert_same_distribution(factor_c, factor_d, tol=0.03)
        unchanged_c, unchanged_d = ((f - 1).abs() < 0.005 for f in (factor_c, factor_d))
        torch.testing.assert_close(unchanged_c.float().mean(), unchanged_d.float().mean(), atol=0.07, rtol=0)
        assert factor_d.min() >= 0.6 - 0.01 and factor_d.max() <= 1.4 + 0.01

    def test_colour_jitter(self) -> None:
        colour = np.tile(np.array([200, 90, 40], dtype=np.uint8), (16, 16, 1))
        cpu, device = _both(colour, 16, n=1500, **IDENTITY_CROP, jitter_p=1.0, grayscale_p=0.0)
        for channel in range(3):
            _assert_same_distribution(cpu[:, channel].mean((1, 2)), device[:, channel].mean((1, 2)), tol=0.04)
        chroma_c, chroma_d = (views.mean((2, 3)).amax(1) - views.mean((2, 3)).amin(1) for views in (cpu, device))
        _assert_same_distribution(chroma_c, chroma_d, tol=0.025)

    def test_grayscale_fraction(self) -> None:
        colourful = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        cpu, device = _both(colourful, 16, **IDENTITY_CROP, jitter_p=0.0)

        def gray(views: Tensor) -> Tensor:
            return ((views[:, 0] - views[:, 1]).abs().amax((1, 2)) < 1e-3).float()

        torch.testing.assert_close(gray(cpu).mean(), gray(device).mean(), atol=0.07, rtol=0)
        assert 0.12 < gray(device).mean() < 0.28

    def test_blur(self) -> None:
        stripes = np.tile((np.arange(64) // 4 % 2 * 255).astype(np.uint8), (64, 1))  # period 8
        cpu, device = _both(np.stack([stripes] * 3, -1), 64, n=1000, **IDENTITY_CROP, **NO_COLOUR, blur_p=0.5)
        # contrast left, exp(-2 pi^2 sigma^2 / 64) for the fundamental: 1 unblurred, 0.997 to 0.08 for sigma 0.1 to 2
        left_c, left_d = (
            views.std((1, 2, 3)) / (127.5 / 255 * (64 * 64 / (64 * 64 - 1)) ** 0.5) for views in (cpu, device)
        )
        blurred_c, blurred_d = left_c < 0.995, left_d < 0.995
        torch.testing.assert_close(blurred_c.float().mean(), blurred_d.float().mean(), atol=0.07, rtol=0)
        assert 0.4 < blurred_d.float().mean() < 0.55
        _assert_same_distribution(left_c[blurred_c], left_d[blurred_d], tol=0.04, quantile_tol=0.09)

    def test_digits_recipe(self) -> None:
        white = torch.full((1, 16, 16), 255, dtype=torch.uint8)  # coverage: the affine map pads with zeros
        ramp = torch.linspace(0, 255, 16).round().to(torch.uint8).expand(1, 16, 16).contiguous()  # crop width
        bar = torch.zeros(1, 16, 16, dtype=torch.uint8)  # rotation
        bar[:, 7:9, 2:14] = 255
        tf = supcon_transform(16, (0.0,), (1.0,), DIGITS_RECIPE)
        aug = DeviceMultiViewAugment(16, (0.0,), (1.0,), n_views=N, recipe=DIGITS_RECIPE)
        assert not any(isinstance(m, v2.RandomHorizontalFlip) for m in tf.transforms)

        def slope(views: Tensor) -> Tensor:  # the ramp's slope in the centre, the inverse of the crop width
            centre = views[:, 4:12]
            return (centre[:, :, 11] - centre[:, :, 4]).mean(1) * 15 / 7

        for image, measure, tol, quantile_tol in (
            (white, lambda views: views.mean((1, 2)), 0.03, 0.06),
            (ramp, slope, 0.02, 0.06),
            (bar, lambda views: _angle(views).abs(), 0.6, 1.5),
        ):
            cpu = torch.stack([tf(image) for _ in range(N)])[:, 0]
            device = aug(image.unsqueeze(0))[0, :, 0]
            _assert_same_distribution(measure(cpu), measure(device), tol=tol, quantile_tol=quantile_tol)
