"""``DigitsDataModule``: scikit-learn's 1,797 handwritten 8x8 digits, a real data set that needs no download.

It is the data set of the quick start: small enough that SupCon with a small CNN trains in a minute or two on a
laptop CPU, real enough that the accuracy means something. The images are upsampled once to ``image_size`` and kept
in memory as one uint8 tensor; the augmentation is a mild random resized crop and a small random rotation and
shift (one warp per view), and no flip (digits are not mirror-symmetric).

- Data: the UCI "Optical Recognition of Handwritten Digits" test set, bundled with scikit-learn as
  ``sklearn.datasets.load_digits`` (pixel values 0..16).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn
from torch.utils.data import TensorDataset
from torchvision.transforms import v2

from lightning_supcon.data.base import MultiViewDataModule
from lightning_supcon.data.device_augment import DeviceMultiViewAugment
from lightning_supcon.data.transforms import check_range

#: Aspect-ratio range, rotation (degrees) and shift (fraction of the side) of the digits recipe.
DIGITS_RATIO: tuple[float, float] = (0.8, 1.25)
DIGITS_DEGREES: float = 10.0
DIGITS_TRANSLATE: float = 0.1


def load_digit_images(image_size: int) -> tuple[Tensor, Tensor]:
    """All 1,797 digits as uint8 ``(N, 1, image_size, image_size)`` images in ``[0, 255]`` and int64 labels.

    Example:
        >>> images, labels = load_digit_images(16)
        >>> images.shape, images.dtype, labels[:5].tolist()
        (torch.Size([1797, 1, 16, 16]), torch.uint8, [0, 1, 2, 3, 4])
    """
    data = load_digits()
    images = torch.as_tensor(data.images, dtype=torch.float32).unsqueeze(1) * (255.0 / 16.0)  # (N, 1, 8, 8)
    if image_size != images.shape[-1]:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return images.round().clamp(0, 255).to(torch.uint8), torch.as_tensor(data.target, dtype=torch.int64)


class RandomResizedCropAffine:
    """A random resized crop, then a random rotation and shift, done as one bilinear warp (PIL) of a uint8 image.

    The crop is drawn as by torchvision's ``RandomResizedCrop`` (area fraction in ``scale``, aspect ratio in
    ``ratio``), the rotation uniformly in ``[-degrees, degrees]`` about the centre, the shift uniformly in
    ``[-translate, translate]`` times the side along each axis; outside the crop is black. Composing them into one
    affine map costs one resampling instead of two; on 16 px digits this is several times faster than torchvision's
    tensor ``RandomResizedCrop`` + ``RandomAffine``, whose ``grid_sample`` also slows down badly when intra-op
    threads compete for busy cores.

    Args:
        size: Side of the square output.
        scale: Range of the crop's area fraction.
        ratio: Range of the crop's aspect ratio (width / height).
        degrees: Maximum absolute rotation, in degrees.
        translate: Maximum absolute shift, as a fraction of the side.

    Shape:
        - image: uint8 ``(1, H, W)`` or ``(3, H, W)``.
        - output: uint8 ``(C, size, size)``.

    Example:
        >>> warp = RandomResizedCropAffine(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0.0, translate=0.0)
        >>> image = torch.arange(256, dtype=torch.uint8).view(1, 16, 16)
        >>> torch.equal(warp(image), image)
        True
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.5, 1.0),
        ratio: tuple[float, float] = DIGITS_RATIO,
        degrees: float = DIGITS_DEGREES,
        translate: float = DIGITS_TRANSLATE,
    ) -> None:
        check_range("scale", scale, high=1.0)
        check_range("ratio", ratio)
        if degrees < 0 or not 0 <= translate <= 1:
            raise ValueError(f"Expected `degrees` >= 0 and `translate` in [0, 1], but got {degrees}, {translate}.")
        self.size, self.scale, self.ratio, self.degrees, self.translate = size, scale, ratio, degrees, translate

    def crop_box(self, height: int, width: int, u: list[float]) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of a random resized crop, from 22 uniform draws ``u`` in ``[0, 1)``.

        As torchvision draws it: up to 10 tries of an area fraction uniform in ``scale`` and a log-uniform aspect
        ratio in ``ratio`` until the box fits, a uniform position, and else the largest central box in ``ratio``.
        """
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        for k in range(10):
            area = height * width * (self.scale[0] + u[2 * k] * (self.scale[1] - self.scale[0]))
            aspect = math.exp(log_low + u[2 * k + 1] * (log_high - log_low))
            w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < w <= width and 0 < h <= height:
                top, left = int(u[20] * (height - h + 1)), int(u[21] * (width - w + 1))
                return left, top, left + w, top + h
        w, h = width, height
        if width / height < self.ratio[0]:
            h = round(width / self.ratio[0])
        elif width / height > self.ratio[1]:
            w = round(height * self.ratio[1])
        top, left = (height - h) // 2, (width - w) // 2
        return left, top, left + w, top + h

    def params(self, image: Tensor) -> tuple[tuple[int, int, int, int], tuple[float, ...]]:
        """A random crop box ``(left, top, right, bottom)`` and the affine map from the output to the crop.

        The map ``(a, b, c, d, e, f)`` sends output point ``(x, y)`` to ``(ax + by + c, dx + ey + f)`` in the crop.
        """
        u = torch.rand(25).tolist()  # one draw from torch's generator (seeded per loader worker)
        left, top, right, bottom = box = self.crop_box(image.shape[-2], image.shape[-1], u)
        angle = math.radians(self.degrees * (2 * u[22] - 1))
        shift_x, shift_y = (self.translate * self.size * (2 * v - 1) for v in u[23:25])
        cos, sin, centre = math.cos(angle), math.sin(angle), self.size / 2
        # output p -> q = R(-angle) (p - centre - shift) + centre in the resized crop -> q * crop / size in the crop
        qx = cos * (-centre - shift_x) + sin * (-centre - shift_y) + centre
        qy = -sin * (-centre - shift_x) + cos * (-centre - shift_y) + centre
        sx, sy = (right - left) / self.size, (bottom - top) / self.size
        return box, (cos * sx, sin * sx, qx * sx, -sin * sy, cos * sy, qy * sy)

    def __call__(self, image: Tensor) -> Tensor:
        array = image.permute(1, 2, 0).numpy()
        box, coefficients = self.params(image)
        # cut the crop first (no resampling), so that what the rotation and shift bring in is black, as in the
        # two-step recipe and its batched twin, not the image around the crop
        crop = Image.fromarray(array[:, :, 0] if image.shape[0] == 1 else array).crop(box)
        size = (self.size, self.size)
        out = crop.transform(size, Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)
        out_array = np.asarray(out).copy()  # writable, for torch
        return torch.from_numpy(out_array).view(self.size, self.size, -1).permute(2, 0, 1).contiguous()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
            f"degrees={self.degrees}, translate={self.translate})"
        )


class ToNormalizedFloat:
    """uint8 ``(C, H, W)`` to float32 ``(x / 255 - mean) / std``: ``ToDtype`` + ``Normalize`` in one cheap step.

    Example:
        >>> ToNormalizedFloat((0.5,), (0.5,))(torch.tensor([[[0, 255]]], dtype=torch.uint8))
        tensor([[[-1.,  1.]]])
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: Tensor) -> Tensor:
        return (image.float().div_(255.0) - self.mean).div_(self.std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def digits_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = DIGITS_RATIO,
    degrees: float = DIGITS_DEGREES,
    translate: float = DIGITS_TRANSLATE,
) -> v2.Compose:
    """One augmented view of a uint8 ``(1, H, W)`` digit: :class:`RandomResizedCropAffine`, then normalisation.

    Example:
        >>> tf = digits_transform(16, (0.3,), (0.3,))
        >>> tf(torch.zeros(1, 16, 16, dtype=torch.uint8)).shape
        torch.Size([1, 16, 16])
    """
    return v2.Compose(
        [
            RandomResizedCropAffine(image_size, scale, ratio, degrees, translate),
            ToNormalizedFloat(mean, std),
        ]
    )


class DigitsDataModule(MultiViewDataModule):
    """scikit-learn's handwritten digits: 10 classes, 1 channel, a fixed stratified train/val split.

    ``mean`` and ``std`` are measured on the training split. The test set is the validation set.

    Args:
        image_size: Side the 8x8 digits are upsampled to (bilinear), e.g. 16 or 32.
        val_fraction: Fraction of the 1,797 images held out for validation, stratified by class.
        split_seed: Seed of the train/val split.
        **kwargs: The arguments of :class:`MultiViewDataModule` (``batch_size``, ``n_views``, ``augment_on``, ...);
            ``crop_scale`` defaults to ``(0.5, 1)``, ``policy`` must stay ``"simclr"`` (the recipe is fixed).

    Raises:
        ValueError: For ``image_size < 8``, ``val_fraction`` outside ``(0, 1)`` or ``policy`` not ``"simclr"``.

    Example:
        >>> dm = DigitsDataModule(batch_size=32, n_views=2)
        >>> views, labels = next(iter(dm.train_dataloader()))
        >>> views.shape, labels.shape, dm.num_classes
        (torch.Size([32, 2, 1, 16, 16]), torch.Size([32]), 10)
        >>> len(dm.train_dataset()), len(dm.val_dataset())
        (1437, 360)
    """

    num_classes = 10
    in_channels = 1
    default_crop_scale = (0.5, 1.0)

    def __init__(self, image_size: int = 16, val_fraction: float = 0.2, split_seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if image_size < 8:
            raise ValueError(f"Expected argument `image_size` to be >= 8, but got {image_size}.")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"Expected argument `val_fraction` to be in (0, 1), but got {val_fraction}.")
        if self.policy != "simclr":
            raise ValueError(f"Expected `policy='simclr'` for digits (a fixed recipe), but got {self.policy!r}.")
        self.image_size = image_size
        images, labels = load_digit_images(image_size)
        train_idx, val_idx = train_test_split(
            torch.arange(len(labels)).numpy(), test_size=val_fraction, stratify=labels.numpy(), random_state=split_seed
        )
        self._train = TensorDataset(images[train_idx], labels[train_idx])
        self._val = TensorDataset(images[val_idx], labels[val_idx])
        pixels = images[train_idx].float().div(255.0)
        self.mean = (round(pixels.mean().item(), 4),)
        self.std = (round(pixels.std().item(), 4),)

    def train_dataset(self) -> TensorDataset:
        return self._train

    def val_dataset(self) -> TensorDataset:
        return self._val

    def train_transform(self) -> Callable[[Any], Tensor]:
        return digits_transform(self.image_size, self.mean, self.std, scale=self.crop_scale)

    def device_augment(self) -> nn.Module:
        return DeviceMultiViewAugment(
            self.image_size,
            self.mean,
            self.std,
            self.n_views,
            scale=self.crop_scale,
            ratio=DIGITS_RATIO,
            flip=False,
            degrees=DIGITS_DEGREES,
            translate=DIGITS_TRANSLATE,
            blur=self.blur,
        )
