"""The per-sample recipes: output formats, which steps they contain, clean eval, multi-view stacking, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from lightning_supcon.data.recipe import AugmentRecipe, blur_kernel_size
from lightning_supcon.data.transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiViewTransform,
    eval_transform,
    supcon_transform,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _pil(seed: int = 0, size: tuple[int, int] = (40, 30)) -> Image.Image:
    rgb = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(rgb)


def _steps(transform: v2.Compose) -> list[type]:
    found: list[type] = []
    for step in transform.transforms:
        found.append(type(step))
        if isinstance(step, v2.RandomApply):
            found += [type(inner) for inner in step.transforms]
    return found


class TestSupconTransform:
    @pytest.mark.parametrize("colour", ["simclr", "autoaugment", "randaugment", "none"])
    @pytest.mark.parametrize("blur", [False, True])
    @pytest.mark.parametrize("as_tensor", [False, True])
    def test_output(self, colour: str, blur: bool, as_tensor: bool) -> None:
        image = _pil()
        sample = v2.functional.pil_to_tensor(image) if as_tensor else image
        recipe = AugmentRecipe(colour=colour, blur_p=0.5 if blur else 0.0)  # type: ignore[arg-type]
        out = supcon_transform(24, CIFAR10_MEAN, CIFAR10_STD, recipe)(sample)
        assert type(out) is torch.Tensor
        assert out.shape == (3, 24, 24) and out.dtype == torch.float32
        assert out.min() >= (0 - max(CIFAR10_MEAN)) / min(CIFAR10_STD) - 1e-5
        assert out.max() <= (1 - min(CIFAR10_MEAN)) / min(CIFAR10_STD) + 1e-5

    def test_simclr_steps(self) -> None:
        steps = _steps(supcon_transform(32, MEAN, STD, AugmentRecipe(blur_p=0.5)))
        for step in (v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.ColorJitter, v2.RandomGrayscale):
            assert step in steps
        assert v2.GaussianBlur in steps
        assert v2.AutoAugment not in steps

    def test_crop_flip_steps(self) -> None:
        steps = _steps(supcon_transform(32, MEAN, STD, AugmentRecipe(colour="none")))
        assert v2.RandomResizedCrop in steps and v2.RandomHorizontalFlip in steps
        assert not {v2.ColorJitter, v2.RandomGrayscale, v2.AutoAugment, v2.RandAugment} & set(steps)

    def test_crop_flip_leaves_colours_alone(self) -> None:
        colour = (200, 10, 90)
        expected = (torch.tensor(colour) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
        transform = supcon_transform(16, MEAN, STD, AugmentRecipe(colour="none"))
        torch.manual_seed(0)
        for _ in range(8):
            out = transform(Image.new("RGB", (40, 30), colour))
            torch.testing.assert_close(out, expected.view(3, 1, 1).expand(3, 16, 16))

    def test_recipe_parameters(self) -> None:
        tf = supcon_transform(
            224, MEAN, STD, AugmentRecipe(scale=(0.08, 1.0), blur_p=0.5, jitter_p=0.7, grayscale_p=0.3)
        )
        crop, jitter, gray, blur = tf.transforms[0], tf.transforms[2], tf.transforms[3], tf.transforms[4]
        assert crop.scale == (0.08, 1.0) and tuple(crop.size) == (224, 224)
        assert jitter.p == 0.7 and gray.p == 0.3 and blur.p == 0.5
        cj = jitter.transforms[0]
        assert (cj.brightness, cj.contrast, cj.saturation, cj.hue) == ((0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1))
        assert tuple(blur.transforms[0].kernel_size) == (23, 23) and list(blur.transforms[0].sigma) == [0.1, 2.0]

    @pytest.mark.parametrize(("colour", "step"), [("autoaugment", v2.AutoAugment), ("randaugment", v2.RandAugment)])
    def test_policies_replace_colour_steps(self, colour: str, step: type) -> None:
        steps = _steps(supcon_transform(32, MEAN, STD, AugmentRecipe(colour=colour)))  # type: ignore[arg-type]
        assert step in steps and v2.ColorJitter not in steps and v2.RandomGrayscale not in steps
        assert steps[:2] == [v2.RandomResizedCrop, v2.RandomHorizontalFlip]

    def test_no_flip(self) -> None:
        assert v2.RandomHorizontalFlip not in _steps(supcon_transform(32, MEAN, STD, AugmentRecipe(flip=False)))

    def test_identity_settings_equal_eval(self) -> None:
        image = _pil(size=(32, 32))
        identity = AugmentRecipe(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, jitter_p=0, grayscale_p=0)
        tf = supcon_transform(32, MEAN, STD, identity)
        torch.testing.assert_close(tf(image), eval_transform(32, MEAN, STD)(image))

    def test_is_random(self) -> None:
        tf = supcon_transform(32, MEAN, STD)
        image = _pil(size=(32, 32))
        assert not torch.equal(tf(image), tf(image))

    def test_grayscale_always(self) -> None:
        out = supcon_transform(16, (0.0,) * 3, (1.0,) * 3, AugmentRecipe(jitter_p=0.0, grayscale_p=1.0))(_pil())
        torch.testing.assert_close(out[0], out[1])
        torch.testing.assert_close(out[1], out[2])

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"colour": "cutout"}, "`colour` to be one of .*'simclr'.*but got 'cutout'"),
            ({"jitter_p": 1.5}, r"`jitter_p` to be in \[0, 1\], but got 1.5"),
            ({"grayscale_p": -0.1}, r"`grayscale_p` to be in \[0, 1\], but got -0.1"),
            ({"scale": (0.5, 0.2)}, r"`scale` to be a pair .* but got \(0.5, 0.2\)"),
            ({"scale": (0.0, 1.0)}, "`scale` to be a pair"),
            ({"ratio": (2.0, 1.0)}, "`ratio` to be a pair"),
        ],
    )
    def test_errors(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            supcon_transform(32, MEAN, STD, AugmentRecipe(**kwargs))


class TestEvalTransform:
    def test_small_is_to_tensor_and_normalize(self) -> None:
        image = _pil(size=(32, 32))
        expected = (
            torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255 - torch.tensor(MEAN).view(3, 1, 1)
        ) / 0.25
        out = eval_transform(32, MEAN, STD)(image)
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(eval_transform(32, MEAN, STD)(v2.functional.pil_to_tensor(image)), expected)

    def test_resize_center_crop(self) -> None:
        image = _pil(size=(300, 200))
        out = eval_transform(224, IMAGENET_MEAN, IMAGENET_STD, resize=256)(image)
        assert out.shape == (3, 224, 224)
        ref = image.resize((384, 256), Image.Resampling.BILINEAR).crop((80, 16, 304, 240))
        expected = eval_transform(224, IMAGENET_MEAN, IMAGENET_STD)(ref)
        assert (out - expected).abs().mean() < 0.05  # PIL's and torchvision's antialiased resize differ slightly

    def test_deterministic(self) -> None:
        tf = eval_transform(24, IMAGENET_MEAN, IMAGENET_STD, resize=28)
        image = _pil()
        assert torch.equal(tf(image), tf(image))


class TestMultiViewTransform:
    @pytest.mark.parametrize("n_views", [1, 2, 4])
    def test_stacks_views(self, n_views: int) -> None:
        out = MultiViewTransform(supcon_transform(16, MEAN, STD), n_views)(_pil())
        assert out.shape == (n_views, 3, 16, 16)
        if n_views > 1:
            assert not torch.equal(out[0], out[1])

    def test_error(self) -> None:
        with pytest.raises(ValueError, match="`n_views` to be >= 1, but got 0"):
            MultiViewTransform(eval_transform(16, MEAN, STD), 0)


@pytest.mark.parametrize(("size", "kernel"), [(8, 3), (32, 3), (64, 7), (96, 9), (224, 23)])
def test_blur_kernel_size(size: int, kernel: int) -> None:
    assert blur_kernel_size(size) == kernel


def test_evaluation_crop_larger_than_resize_is_refused() -> None:
    """Resize(16) then CenterCrop(32) pads the crop with zeros (torchvision does so silently)."""
    with pytest.raises(ValueError, match="got resize 16 < image_size 32, which pads the crop with zeros"):
        eval_transform(32, (0.5,), (0.5,), resize=16)
