"""Batched multi-view augmentation on the model's device (kornia), with per-sample random parameters.

It draws from the same parameter ranges as :func:`~lightning_supcon.data.transforms.supcon_transform` (the
SupCon/SimCLR recipe [0, 1]) but works on a whole batch at once, so data-loader workers only decode images. One
difference: kornia's colour jitter draws the order of its four steps once per batch, torchvision once per image.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [1] Chen et al., SimCLR, ICML 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from lightning_supcon.data.transforms import (
    BLUR_P,
    BLUR_SIGMA,
    CROP_RATIO,
    GRAYSCALE_P,
    JITTER,
    JITTER_P,
    blur_kernel_size,
    check_probability,
    check_range,
)


class DeviceNormalize(nn.Module):
    """Turn a uint8 (or float ``[0, 1]``) image batch into a normalised float batch: the clean eval path.

    Args:
        mean: Per-channel mean.
        std: Per-channel standard deviation.

    Shape:
        - images: ``(B, C, H, W)`` uint8 in ``[0, 255]`` or float in ``[0, 1]``, ``C == len(mean)``.
        - output: ``(B, C, H, W)`` float32.

    Example:
        >>> norm = DeviceNormalize((0.5,), (0.25,))
        >>> norm(torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2))
        tensor([[[[-2.,  2.]]]])
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"Expected `mean` and `std` of equal length, but got {tuple(mean)} and {tuple(std)}.")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1), persistent=False)

    def to_unit(self, images: Tensor) -> Tensor:
        """Check the batch and convert it to float32 in ``[0, 1]``."""
        if images.ndim != 4 or images.shape[1] != self.mean.numel():
            raise ValueError(f"Expected images of shape (B, {self.mean.numel()}, H, W), but got {tuple(images.shape)}.")
        if images.dtype == torch.uint8:
            return images.float().div_(255.0)
        if not images.is_floating_point():
            raise ValueError(f"Expected uint8 or float images, but got {images.dtype}.")
        return images.float()

    def forward(self, images: Tensor) -> Tensor:
        return (self.to_unit(images) - self.mean.to(images.device)) / self.std.to(images.device)


class DeviceMultiViewAugment(nn.Module):
    """``n_views`` independently augmented views of every image of a batch, made on the batch's device.

    Steps, each with per-sample random parameters: ``RandomResizedCrop(image_size, scale, ratio)``, horizontal
    flip (``flip``), a random affine map (when ``degrees`` or ``translate`` is non-zero, as for digits), colour
    jitter ``JITTER`` with probability ``jitter_p`` and grayscale with probability ``grayscale_p`` (3-channel
    images only), Gaussian blur (``blur``) with probability ``BLUR_P`` and sigma in ``BLUR_SIGMA``, then the
    normalisation.

    Args:
        image_size: Side of the square output views.
        mean: Per-channel mean; its length fixes the number of channels.
        std: Per-channel standard deviation.
        n_views: Views per image, >= 1.
        scale: Range of the crop's area fraction.
        ratio: Range of the crop's aspect ratio (width / height).
        flip: Random horizontal flip with probability 0.5.
        jitter_p: Probability of the colour jitter.
        grayscale_p: Probability of the grayscale step.
        blur: Add the Gaussian blur (ImageNet-sized images).
        degrees: Maximum absolute rotation of the affine step, in degrees.
        translate: Maximum absolute shift of the affine step, as a fraction of the side.

    Shape:
        - images: ``(B, C, H, W)``, uint8 in ``[0, 255]`` or float in ``[0, 1]``, all of one size.
        - output: ``(B, n_views, C, image_size, image_size)`` float32, normalised.

    Example:
        >>> aug = DeviceMultiViewAugment(16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), n_views=3)
        >>> aug(torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8)).shape
        torch.Size([4, 3, 3, 16, 16])
    """

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        n_views: int = 2,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = CROP_RATIO,
        flip: bool = True,
        jitter_p: float = JITTER_P,
        grayscale_p: float = GRAYSCALE_P,
        blur: bool = False,
        degrees: float = 0.0,
        translate: float = 0.0,
    ) -> None:
        super().__init__()
        if n_views < 1:
            raise ValueError(f"Expected argument `n_views` to be >= 1, but got {n_views}.")
        check_range("scale", scale, high=1.0)
        check_range("ratio", ratio)
        check_probability("jitter_p", jitter_p)
        check_probability("grayscale_p", grayscale_p)
        if degrees < 0 or not 0 <= translate <= 1:
            raise ValueError(f"Expected `degrees` >= 0 and `translate` in [0, 1], but got {degrees}, {translate}.")
        self.n_views = n_views
        self.normalize = DeviceNormalize(mean, std)
        geometric: list[nn.Module] = [
            K.RandomResizedCrop((image_size, image_size), scale=scale, ratio=ratio, align_corners=False)
        ]
        if flip:
            geometric.append(K.RandomHorizontalFlip(p=0.5))
        if degrees > 0 or translate > 0:
            geometric.append(K.RandomAffine(degrees, translate=(translate, translate), p=1.0))
        self.geometric = nn.Sequential(*geometric)
        colour: list[nn.Module] = []
        if len(mean) == 3:  # colour steps need RGB; 1-channel images only get the geometric ones
            if jitter_p > 0:
                colour.append(K.ColorJitter(*JITTER, p=jitter_p))
            if grayscale_p > 0:
                colour.append(K.RandomGrayscale(p=grayscale_p))
        if blur:
            k = blur_kernel_size(image_size)
            colour.append(K.RandomGaussianBlur((k, k), sigma=BLUR_SIGMA, p=BLUR_P))
        self.colour = nn.Sequential(*colour)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        batch = images.shape[0]
        x = self.normalize.to_unit(images)
        x = x.repeat_interleave(self.n_views, dim=0)  # (B * V, C, H, W), the views of a sample adjacent
        x = self.colour(self.geometric(x))
        x = self.normalize(x)
        return x.view(batch, self.n_views, *x.shape[1:])  # (B, V, C, S, S)
