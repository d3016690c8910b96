"""The data of ``evidence.py``, all made locally from scikit-learn's digits: no download.

- :func:`corrupt`: a corrupted copy of a set of images (Gaussian noise, blur, contrast, rotation, elastic warp; five
  severities; seeded), in the spirit of ImageNet-C [0], made with torchvision's ``transforms.v2.functional`` ops.
- :class:`HardDigits`: class-overlapping digits, a harder 10-class problem: every image (train and val) is blended
  once with a digit of another class and noised, with a fixed seed, so the task stays the same across runs.
- :class:`DigitsSubset`: the digits of some classes only (the in-distribution set of the OOD comparison, 0-4).
- :func:`far_ood_images`: far out-of-distribution inputs: uniform noise, drawn shapes (PIL) and inverted digits.

- [0] Hendrycks and Dietterich, Benchmarking Neural Network Robustness to Common Corruptions and Perturbations,
  ICLR 2019, https://arxiv.org/abs/1903.12261 (ImageNet-C: 15 corruptions x 5 severities; the corruption error
  of a model is normalised by a baseline's, mCE = the mean over corruptions)
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageDraw
from torch import Tensor

from lightning_supcon import DigitsDataModule
from lightning_supcon.data.labels import LabelledDataset

Corruption = Literal["gaussian_noise", "blur", "contrast", "rotation", "elastic"]
CORRUPTIONS: tuple[str, ...] = get_args(Corruption)
SEVERITIES = (1, 2, 3, 4, 5)

# Parameters by severity 1..5, for 16 px digits with values in [0, 1].
_NOISE_SIGMA = (0.08, 0.16, 0.24, 0.32, 0.40)
_BLUR_SIGMA = (0.5, 0.75, 1.0, 1.25, 1.5)  # pixels
_CONTRAST = (0.6, 0.5, 0.4, 0.3, 0.2)  # contrast factor (1 = unchanged)
_DEGREES = (10.0, 20.0, 30.0, 45.0, 60.0)  # rotation, sign drawn per image
_ELASTIC_ALPHA = (15.0, 30.0, 45.0, 60.0, 75.0)  # torchvision's ElasticTransform alpha, sigma 2 px
_ELASTIC_SIGMA = 2.0


def _check(corruption: str, severity: int) -> None:
    if corruption not in CORRUPTIONS:
        raise ValueError(f"Expected `corruption` to be one of {CORRUPTIONS}, but got {corruption!r}.")
    if severity not in SEVERITIES:
        raise ValueError(f"Expected `severity` in {SEVERITIES}, but got {severity}.")


def _elastic_displacement(count: int, size: int, alpha: float, gen: torch.Generator) -> Tensor:
    """Displacement fields ``(count, size, size, 2)`` as ``transforms.v2.ElasticTransform`` draws them (uniform noise
    smoothed by a Gaussian of sigma ``_ELASTIC_SIGMA``, scaled by ``alpha / size``), from ``gen``."""
    noise = torch.rand(count, 2, size, size, generator=gen) * 2 - 1  # (N, 2, H, W): dx, dy
    kernel = int(8 * _ELASTIC_SIGMA + 1) | 1  # odd, as torchvision's
    smooth = TF.gaussian_blur(noise, [kernel, kernel], [_ELASTIC_SIGMA, _ELASTIC_SIGMA])
    return (smooth * alpha / size).permute(0, 2, 3, 1)  # (N, H, W, 2)


def corrupt(images: Tensor, corruption: str, severity: int, seed: int = 0) -> Tensor:
    """A corrupted copy of uint8 images; the same ``seed`` gives the same copy.

    Args:
        images: ``(N, C, H, W)`` uint8 images.
        corruption: One of ``CORRUPTIONS``.
        severity: 1 (mild) to 5 (strong).
        seed: Seed of the random parts (noise, rotation signs, displacement fields).

    Returns:
        ``(N, C, H, W)`` uint8, rounded back to grey levels as a stored corrupted data set would be.

    Raises:
        ValueError: For an unknown corruption or a severity outside 1..5, or images that are not uint8 ``(N, C, H, W)``.

    Example:
        >>> images = torch.full((2, 1, 16, 16), 200, dtype=torch.uint8)
        >>> corrupt(images, "contrast", 5).unique().tolist()  # towards the mean grey: 0.1 x 200 + 0.9 x 200
        [200]
        >>> bool((corrupt(images, "gaussian_noise", 3, seed=1) == corrupt(images, "gaussian_noise", 3, seed=1)).all())
        True
    """
    _check(corruption, severity)
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"Expected uint8 images (N, C, H, W), but got {images.dtype} {tuple(images.shape)}.")
    gen = torch.Generator().manual_seed(seed)
    x = images.float() / 255.0
    s = severity - 1
    if corruption == "gaussian_noise":
        x = (x + _NOISE_SIGMA[s] * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    elif corruption == "blur":
        sigma = _BLUR_SIGMA[s]
        kernel = 2 * int(np.ceil(3 * sigma)) + 1
        x = TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma])
    elif corruption == "contrast":
        x = TF.adjust_contrast(x, _CONTRAST[s])
    elif corruption == "rotation":
        signs = torch.randint(0, 2, (len(x),), generator=gen) * 2 - 1
        x = torch.stack(
            [
                TF.rotate(image, float(sign) * _DEGREES[s], interpolation=TF.InterpolationMode.BILINEAR)
                for image, sign in zip(x, signs.tolist(), strict=True)
            ]
        )
    else:  # elastic
        fields = _elastic_displacement(len(x), x.shape[-1], _ELASTIC_ALPHA[s], gen)
        x = torch.stack([TF.elastic_transform(image, field[None]) for image, field in zip(x, fields, strict=True)])
    return (x * 255.0).round().clamp(0, 255).to(torch.uint8)


def blend_with_other_class(images: Tensor, labels: Tensor, weight: float, noise: float, seed: int) -> Tensor:
    """Each image blended with a random image of another class, ``(1 - weight) x own + weight x other``, plus
    Gaussian noise of std ``noise`` (values in [0, 1]); uint8 ``(N, C, H, W)`` in and out.

    Example:
        >>> images = torch.stack([torch.full((1, 4, 4), v, dtype=torch.uint8) for v in (0, 200, 100)])
        >>> blend_with_other_class(images, torch.tensor([0, 1, 1]), 0.25, 0.0, seed=0)[:, 0, 0, 0].tolist()
        [50, 150, 75]
    """
    gen = torch.Generator().manual_seed(seed)
    x = images.float() / 255.0
    other = torch.empty(len(labels), dtype=torch.long)
    for i, label in enumerate(labels.tolist()):
        candidates = (labels != label).nonzero().squeeze(1)
        other[i] = candidates[torch.randint(len(candidates), (1,), generator=gen)]
    mixed = (1 - weight) * x + weight * x[other] + noise * torch.randn(x.shape, generator=gen)
    return (mixed.clamp(0, 1) * 255.0).round().to(torch.uint8)


def tensors(data: LabelledDataset | None) -> tuple[Tensor, Tensor]:
    """The images ``(N, 1, H, W)`` uint8 and labels ``(N,)`` of a digits split (its samples carry their labels)."""
    assert data is not None, "a split the digits have"
    images = data.images
    assert isinstance(images, Tensor)
    return images, torch.as_tensor(data.labels)


class HardDigits(DigitsDataModule):
    """Class-overlapping digits: each image blended once with a digit of another class (``weight`` 0.45) and
    noised (std 0.1), train and val alike, with fixed seeds: the same harder 10-class task in every run.

    Example:
        >>> dm = HardDigits(batch_size=32)
        >>> len(dm.dataset("train")), len(dm.dataset("val")), dm.num_classes
        (1437, 360, 10)
    """

    def __init__(self, weight: float = 0.45, noise: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for offset, name in enumerate(("_train", "_val")):
            images, labels = tensors(getattr(self, name))
            blended = blend_with_other_class(images, labels, weight, noise, 100 + offset)
            setattr(self, name, LabelledDataset(blended, labels))
        pixels = tensors(self._train)[0].float().div(255.0)
        self.mean, self.std = (round(pixels.mean().item(), 4),), (round(pixels.std().item(), 4),)


class DigitsSubset(DigitsDataModule):
    """The digits of ``classes`` only (train and val), relabelled ``0 .. len(classes) - 1``.

    Example:
        >>> dm = DigitsSubset(classes=(0, 1, 2, 3, 4), batch_size=32)
        >>> dm.num_classes, sorted(set(dm.dataset("val").labels.tolist()))
        (5, [0, 1, 2, 3, 4])
    """

    def __init__(self, classes: tuple[int, ...] = (0, 1, 2, 3, 4), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = len(classes)
        self.held_out_val = self._val  # all classes, for the near-OOD set
        for name in ("_train", "_val"):
            images, labels = tensors(getattr(self, name))
            keep = torch.isin(labels, torch.tensor(classes))
            relabel = {c: i for i, c in enumerate(classes)}
            new = torch.tensor([relabel[c] for c in labels[keep].tolist()], dtype=torch.long)
            setattr(self, name, LabelledDataset(images[keep], new))


def far_ood_images(in_images: Tensor, count: int, seed: int = 0) -> dict[str, Tensor]:
    """Far OOD inputs like ``in_images`` (uint8 ``(N, 1, H, W)``): ``count`` uniform-noise images, ``count`` images
    of a random filled ellipse or rectangle (PIL), and the inverted ``in_images`` (255 - x).

    Example:
        >>> far = far_ood_images(torch.zeros(3, 1, 16, 16, dtype=torch.uint8), 4)
        >>> {name: tuple(x.shape) for name, x in far.items()}
        {'noise': (4, 1, 16, 16), 'shapes': (4, 1, 16, 16), 'inverted': (3, 1, 16, 16)}
    """
    rng = np.random.default_rng(seed)
    size = in_images.shape[-1]
    noise = torch.from_numpy(rng.integers(0, 256, (count, 1, size, size), dtype=np.uint8))
    shapes = []
    for _ in range(count):
        canvas = Image.new("L", (size, size), 0)
        x0, y0 = rng.integers(0, size // 2, 2).tolist()
        x1, y1 = (rng.integers(size // 2, size, 2)).tolist()
        draw = ImageDraw.Draw(canvas)
        fill = int(rng.integers(128, 256))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=fill)
        shapes.append(torch.from_numpy(np.asarray(canvas, dtype=np.uint8).copy())[None])
    return {"noise": noise, "shapes": torch.stack(shapes), "inverted": 255 - in_images}
