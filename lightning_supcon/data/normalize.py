"""``ToNormalizedFloat``: the one uint8 -> normalised float conversion, for single images and batches.

Every path ends here: the CPU recipes and clean transforms per sample in the loader workers, the device recipe and
the clean device path per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class ToNormalizedFloat(nn.Module):
    """``(x / 255 - mean) / std`` for uint8 images (float images are taken as already in ``[0, 1]``).

    Args:
        mean: Per-channel mean.
        std: Per-channel standard deviation.

    Shape:
        - images: ``(C, H, W)`` or ``(B, C, H, W)``, uint8 in ``[0, 255]`` or float in ``[0, 1]``,
          ``C == len(mean)``.
        - output: the same shape, float32, a plain ``Tensor``.

    Raises:
        ValueError: For ``mean`` and ``std`` of different lengths (at construction); for images of another number
            of channels or dimensions, or of an integer type other than uint8 (when called).

    Example:
        >>> norm = ToNormalizedFloat((0.5,), (0.25,))
        >>> norm(torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2))
        tensor([[[[-2.,  2.]]]])
        >>> norm(torch.tensor([[[0, 255]]], dtype=torch.uint8))
        tensor([[[-2.,  2.]]])
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
        """Check the images and convert them to float32 in ``[0, 1]`` (a plain ``Tensor``)."""
        channels = self.mean.numel()
        if images.ndim not in (3, 4) or images.shape[-3] != channels:
            expected = f"({channels}, H, W)" if images.ndim == 3 else f"(B, {channels}, H, W)"
            raise ValueError(f"Expected images of shape {expected}, but got {tuple(images.shape)}.")
        images = images.as_subclass(Tensor)  # torchvision's tv_tensors.Image -> Tensor
        if images.dtype == torch.uint8:
            return images.float().div_(255.0)
        if not images.is_floating_point():
            raise ValueError(f"Expected uint8 or float images, but got {images.dtype}.")
        return images.float()

    def forward(self, images: Tensor) -> Tensor:
        return (self.to_unit(images) - self.mean.to(images.device)).div_(self.std.to(images.device))

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def channel_statistics(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images in ``[0, 1]`` units, over all images and pixels,
    rounded to 4 decimals: the ``mean`` and ``std`` that :class:`ToNormalizedFloat` then takes.

    Computed in float64, so the result does not depend on the batch's order or the number of threads (exact sums of
    uint8 values).

    Args:
        images: uint8 ``(N, C, H, W)``.

    Returns:
        ``(mean, std)``, each a tuple of ``C`` floats; ``std`` is the unbiased sample standard deviation.

    Raises:
        ValueError: For images that are not a uint8 ``(N, C, H, W)`` batch with at least 2 pixels per channel.

    Example:
        >>> images = torch.tensor([[[[0, 255]], [[51, 51]]]], dtype=torch.uint8)  # (1, 2, 1, 2)
        >>> channel_statistics(images)
        ((0.5, 0.2), (0.7071, 0.0))
    """
    if images.ndim != 4 or images.dtype != torch.uint8 or images[:, 0].numel() < 2:
        raise ValueError(
            f"Expected uint8 images (N, C, H, W) with >= 2 pixels, but got {images.dtype} {tuple(images.shape)}."
        )
    pixels = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255.0  # (C, N * H * W)
    mean = tuple(round(v, 4) for v in pixels.mean(dim=1).tolist())
    std = tuple(round(v, 4) for v in pixels.std(dim=1).tolist())
    return mean, std
