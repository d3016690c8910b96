"""The CPU backend: per-sample torchvision (``transforms.v2``) pipelines for PIL images or uint8 ``(C, H, W)`` tensors.

:func:`supcon_transform` builds one training view from an :class:`~lightning_supcon.data.recipe.AugmentRecipe`
(the device backend builds the batched twin from the same recipe); :func:`eval_transform` is the clean view;
:class:`MultiViewTransform` stacks ``n_views`` views of one sample. The per-channel statistics of the data sets of
SupCon [0] are here too.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import v2

from lightning_supcon.data.normalize import ToNormalizedFloat
from lightning_supcon.data.recipe import SIMCLR, AugmentRecipe, blur_kernel_size
from lightning_supcon.data.warp import RandomResizedCropAffine

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4867, 0.4408)
CIFAR100_STD: tuple[float, float, float] = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def supcon_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float], recipe: AugmentRecipe = SIMCLR
) -> v2.Compose:
    """The CPU (torchvision) backend of ``recipe``: one augmented view of a raw image.

    Steps: ``RandomResizedCrop(image_size, recipe.scale, recipe.ratio)`` (with a rotation or shift in the recipe:
    :class:`~lightning_supcon.data.warp.RandomResizedCropAffine`, one warp), horizontal flip; for
    ``colour="simclr"`` and RGB images ``ColorJitter(*recipe.jitter_factors)`` with probability ``jitter_p`` and
    grayscale with probability ``grayscale_p``, for ``"autoaugment"`` torchvision's AutoAugment with the ImageNet
    policy, for ``"randaugment"`` RandAugment with its defaults; a Gaussian blur with probability ``blur_p``; last
    :class:`~lightning_supcon.data.normalize.ToNormalizedFloat`. All randomness comes from torch's global
    generator, which the training loader seeds per sample.

    Args:
        image_size: Side of the square output.
        mean: Per-channel mean for the normalisation; its length is the number of channels.
        std: Per-channel standard deviation for the normalisation.
        recipe: The augmentation; default SupCon's CIFAR recipe.

    Returns:
        A callable taking a PIL image or a uint8 ``(C, H, W)`` tensor and returning a float tensor
        ``(C, image_size, image_size)``.

    Example:
        >>> from PIL import Image
        >>> tf = supcon_transform(24, CIFAR10_MEAN, CIFAR10_STD)
        >>> tf(Image.new("RGB", (40, 30), (200, 10, 90))).shape
        torch.Size([3, 24, 24])
        >>> tf(torch.zeros(3, 32, 32, dtype=torch.uint8)).dtype
        torch.float32
    """
    steps: list[Callable[[Any], Any]] = []
    if recipe.warps:
        steps.append(RandomResizedCropAffine.from_recipe(image_size, recipe))
    else:
        steps.append(v2.RandomResizedCrop(image_size, scale=recipe.scale, ratio=recipe.ratio, antialias=True))
    if recipe.flip:
        steps.append(v2.RandomHorizontalFlip())
    jitter, grayscale = recipe.colour_steps(len(mean))
    if jitter:
        steps.append(v2.RandomApply([v2.ColorJitter(*recipe.jitter_factors)], p=recipe.jitter_p))
    if grayscale:
        steps.append(v2.RandomGrayscale(p=recipe.grayscale_p))
    if recipe.colour == "autoaugment":
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))
    elif recipe.colour == "randaugment":
        steps.append(v2.RandAugment())
    if recipe.blur_p > 0:
        blur = v2.GaussianBlur(blur_kernel_size(image_size), sigma=recipe.blur_sigma)
        steps.append(v2.RandomApply([blur], p=recipe.blur_p))
    return v2.Compose([*steps, v2.ToImage(), ToNormalizedFloat(mean, std)])


def eval_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float], resize: int | None = None
) -> v2.Compose:
    """The clean, deterministic transform for evaluation.

    Args:
        image_size: Side of the square output. Without ``resize`` the input must already have this size.
        mean: Per-channel mean for the normalisation.
        std: Per-channel standard deviation for the normalisation.
        resize: When given (ImageNet: 256 for 224), resize the shorter side to ``resize`` and take the central
            ``image_size`` square; when ``None`` (small fixed-size data sets) only convert and normalise.

    Raises:
        ValueError: For a ``resize`` smaller than ``image_size`` (the crop would be padded with zeros).

    Returns:
        A callable taking a PIL image or a uint8 ``(C, H, W)`` tensor and returning a float tensor
        ``(C, image_size, image_size)``.

    Example:
        >>> from PIL import Image
        >>> tf = eval_transform(224, IMAGENET_MEAN, IMAGENET_STD, resize=256)
        >>> tf(Image.new("RGB", (500, 375))).shape
        torch.Size([3, 224, 224])
        >>> x = eval_transform(2, (0.5,), (0.5,))(torch.tensor([[[0, 255], [255, 0]]], dtype=torch.uint8))
        >>> x
        tensor([[[-1.,  1.],
                 [ 1., -1.]]])
    """
    return v2.Compose([*decode_steps(image_size, resize), ToNormalizedFloat(mean, std)])


def decode_steps(image_size: int, resize: int | None = None) -> list[Callable[[Any], Any]]:
    """A raw image (PIL or tensor) to a uint8 ``(C, H, W)`` tensor, resized and centre-cropped when ``resize``.

    Raises:
        ValueError: For a ``resize`` smaller than ``image_size``: the crop would be padded with zeros.
    """
    steps: list[Callable[[Any], Any]] = []
    if resize is not None and resize < image_size:
        raise ValueError(crop_larger_than_resize(image_size, resize))
    if resize is not None:
        steps += [v2.Resize(resize, antialias=True), v2.CenterCrop(image_size)]
    return [*steps, v2.ToImage(), v2.ToDtype(torch.uint8, scale=True), v2.ToPureTensor()]


def crop_larger_than_resize(image_size: int, resize: int) -> str:
    """The one-line refusal of a centre crop larger than the resized image (torchvision pads it with zeros)."""
    return (
        f"Expected `resize` >= `image_size` (the evaluation crop is the centre image_size square of the image resized "
        f"to resize), but got resize {resize} < image_size {image_size}, which pads the crop with zeros: set "
        f"--data.resize >= {image_size}, or leave it out."
    )


class MultiViewTransform:
    """Apply a random transform ``n_views`` times to one sample and stack the results.

    Args:
        transform: The single-view transform, returning a ``(C, H, W)`` tensor.
        n_views: Number of views, >= 1.

    Shape:
        - output: ``(n_views, C, H, W)``.

    Raises:
        ValueError: If ``n_views < 1``.

    Example:
        >>> tf = MultiViewTransform(supcon_transform(8, (0.5,) * 3, (0.5,) * 3), n_views=4)
        >>> tf(torch.zeros(3, 16, 16, dtype=torch.uint8)).shape
        torch.Size([4, 3, 8, 8])
    """

    def __init__(self, transform: Callable[[Any], Tensor], n_views: int = 2) -> None:
        if n_views < 1:
            raise ValueError(f"Expected argument `n_views` to be >= 1, but got {n_views}.")
        self.transform = transform
        self.n_views = n_views

    def __call__(self, image: Any) -> Tensor:
        return torch.stack([self.transform(image) for _ in range(self.n_views)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_views={self.n_views}, transform={self.transform!r})"
