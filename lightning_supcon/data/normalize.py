"""``ToNormalizedFloat``: the one uint8 -> normalised float conversion, for single images and batches.

Every path ends here: the CPU recipes and clean transforms per sample in the loader workers, the device recipe and
the clean device path per batch. It divides by ``std``, so it refuses a ``std`` that is not a positive finite number;
:func:`channel_statistics`, which measures ``std``, floors it at :data:`STD_FLOOR`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

#: The smallest measured ``std``: one 8-bit grey level, 1/255. A channel that varies less than that (a constant
#: band, or a few pixels one level off) carries no signal at 8 bits, and dividing by its true ``std`` (0, or 4e-5)
#: turns every pixel into NaN or into hundreds of standard deviations. torchvision's ``Normalize`` refuses only an
#: exact 0.
STD_FLOOR = 1 / 255


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
        ValueError: For ``mean`` and ``std`` of different lengths, a ``std`` that is not positive and finite, or a
            ``mean`` that is not finite (at construction, naming the channel); for images of another number of
            channels or dimensions, or of an integer type other than uint8 (when called).

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
        check_statistics(mean, std)
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


def check_statistics(mean: Sequence[float], std: Sequence[float]) -> None:
    """Raise ``ValueError`` naming the first channel whose ``std`` is not positive and finite (a divisor) or whose
    ``mean`` is not finite.

    Example:
        >>> check_statistics((0.5, 0.5), (0.2, 0.0))
        Traceback (most recent call last):
        ...
        ValueError: Expected every `std` to be a positive finite number (it divides), but channel 1's is 0.0.
    """
    for channel, (m, s) in enumerate(zip(mean, std, strict=True)):
        if not (math.isfinite(s) and s > 0):
            raise ValueError(
                f"Expected every `std` to be a positive finite number (it divides), but channel {channel}'s is {s}."
            )
        if not math.isfinite(m):
            raise ValueError(f"Expected every `mean` to be a finite number, but channel {channel}'s is {m}.")


def channel_statistics(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images in ``[0, 1]`` units, over all images and pixels:
    the ``mean`` and ``std`` that :class:`ToNormalizedFloat` then takes.

    Computed in float64, so the result does not depend on the batch's order or the number of threads (exact sums of
    uint8 values). The mean is rounded to 4 decimals, the std to 4 significant digits (never to 0) and floored at
    :data:`STD_FLOOR`, with one warning naming each floored channel.

    Args:
        images: uint8 ``(N, C, H, W)``.

    Returns:
        ``(mean, std)``, each a tuple of ``C`` floats; ``std`` is the unbiased sample standard deviation.

    Raises:
        ValueError: For images that are not a uint8 ``(N, C, H, W)`` batch with at least 2 pixels per channel.

    Example:
        >>> images = torch.tensor([[[[0, 255]], [[51, 51]]]], dtype=torch.uint8)  # (1, 2, 1, 2)
        >>> channel_statistics(images)  # channel 1 is constant: its std 0 is floored to 1/255
        ((0.5, 0.2), (0.7071, 0.003922))
    """
    if images.ndim != 4 or images.dtype != torch.uint8 or images[:, 0].numel() < 2:
        raise ValueError(
            f"Expected uint8 images (N, C, H, W) with >= 2 pixels, but got {images.dtype} {tuple(images.shape)}."
        )
    pixels = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255.0  # (C, N * H * W)
    mean = tuple(round(v, 4) for v in pixels.mean(dim=1).tolist())
    std = tuple(float(f"{v:.4g}") for v in pixels.std(dim=1).tolist())
    low = [channel for channel, v in enumerate(std) if v < STD_FLOOR]
    for channel in low:
        warnings.warn(
            f"Channel {channel}'s measured std {std[channel]:g} is below one grey level (1/255): floored to "
            f"{STD_FLOOR:.4g}, so that it does not divide the channel into NaN or outliers.",
            stacklevel=2,
        )
    floored = tuple(float(f"{STD_FLOOR:.4g}") if channel in low else v for channel, v in enumerate(std))
    return mean, floored
