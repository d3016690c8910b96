"""Per-sample augmentation recipes (torchvision ``transforms.v2``) for PIL images or uint8 ``(C, H, W)`` tensors.

The training recipe is the one of SupCon [0] (Sec. 4 and Appendix), itself SimCLR's [1]: random resized crop,
horizontal flip, colour jitter ``(0.4, 0.4, 0.4, 0.1)`` with probability 0.8, grayscale with probability 0.2,
and for ImageNet-sized images a Gaussian blur with probability 0.5, sigma in ``[0.1, 2.0]`` and a kernel of about
10% of the image side [1, Appendix A]. SupCon also reports AutoAugment [2] and RandAugment [3] as stronger
alternatives to the colour steps. The reference code trains its cross-entropy baseline and the linear classifier
of stage 2 with random resized crop and flip only (policy ``"crop_flip"``).

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [1] Chen et al., SimCLR, ICML 2020, https://arxiv.org/abs/2002.05709
- [2] Cubuk et al., AutoAugment, CVPR 2019, https://arxiv.org/abs/1805.09501
- [3] Cubuk et al., RandAugment, NeurIPS 2020 workshops, https://arxiv.org/abs/1909.13719
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torchvision.transforms import v2

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4867, 0.4408)
CIFAR100_STD: tuple[float, float, float] = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

Policy = Literal["simclr", "autoaugment", "randaugment", "crop_flip"]
POLICIES: tuple[str, ...] = ("simclr", "autoaugment", "randaugment", "crop_flip")

#: Colour jitter strengths (brightness, contrast, saturation, hue) of [0] and [1].
JITTER: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
#: Probabilities of the colour-jitter and grayscale steps of [0] and [1].
JITTER_P, GRAYSCALE_P = 0.8, 0.2
#: Gaussian blur: sigma range and probability of [1, Appendix A].
BLUR_SIGMA: tuple[float, float] = (0.1, 2.0)
BLUR_P: float = 0.5
#: Aspect-ratio range (width / height) of the random resized crop, torchvision's default.
CROP_RATIO: tuple[float, float] = (3 / 4, 4 / 3)


def blur_kernel_size(image_size: int) -> int:
    """The odd kernel side closest below 10% of the image side, at least 3 ([1], Appendix A).

    Example:
        >>> blur_kernel_size(224), blur_kernel_size(32)
        (23, 3)
    """
    return max(3, int(0.1 * image_size) // 2 * 2 + 1)


def check_probability(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``0 <= value <= 1``."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"Expected argument `{name}` to be in [0, 1], but got {value}.")


def check_range(name: str, value: Sequence[float], low: float = 0.0, high: float = float("inf")) -> None:
    """Raise ``ValueError`` unless ``value`` is a pair ``(a, b)`` with ``low < a <= b <= high``."""
    if len(value) != 2 or not low < value[0] <= value[1] <= high:
        raise ValueError(
            f"Expected argument `{name}` to be a pair (a, b) with {low} < a <= b <= {high}, but got {tuple(value)}."
        )


def _to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list[Callable[[Any], Any]]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)), v2.ToPureTensor()]


def supcon_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scale: tuple[float, float] = (0.2, 1.0),
    policy: Policy = "simclr",
    blur: bool = False,
    flip: bool = True,
    grayscale_p: float = GRAYSCALE_P,
    jitter_p: float = JITTER_P,
    ratio: tuple[float, float] = CROP_RATIO,
) -> v2.Compose:
    """The SupCon/SimCLR training recipe for one view.

    Steps: ``RandomResizedCrop(image_size, scale, ratio)``, horizontal flip (``flip``); then for
    ``policy="simclr"`` colour jitter ``JITTER`` with probability ``jitter_p`` and grayscale with probability
    ``grayscale_p``, for ``"autoaugment"`` torchvision's AutoAugment with the ImageNet policy, for ``"randaugment"``
    RandAugment with its defaults, for ``"crop_flip"`` nothing (crop and flip only); then (``blur``) a Gaussian
    blur with probability ``BLUR_P``, sigma in ``BLUR_SIGMA`` and kernel ``blur_kernel_size(image_size)``; last
    ``float32`` in ``[0, 1]`` and normalisation.

    Args:
        image_size: Side of the square output.
        mean: Per-channel mean for the normalisation.
        std: Per-channel standard deviation for the normalisation.
        scale: Range of the crop's area as a fraction of the image's; SupCon uses ``(0.2, 1)`` for CIFAR and
            ``(0.08, 1)`` for ImageNet.
        policy: ``"simclr"``, ``"autoaugment"``, ``"randaugment"`` or ``"crop_flip"`` (no colour step).
        blur: Add the Gaussian blur (ImageNet-sized images).
        flip: Add the random horizontal flip (probability 0.5).
        grayscale_p: Probability of the grayscale step (``"simclr"`` only).
        jitter_p: Probability of the colour-jitter step (``"simclr"`` only).
        ratio: Range of the crop's aspect ratio (width / height).

    Returns:
        A callable taking a PIL image or a uint8 ``(C, H, W)`` tensor and returning a float tensor
        ``(C, image_size, image_size)``.

    Raises:
        ValueError: For an unknown ``policy``, a probability outside ``[0, 1]`` or a bad ``scale``.

    Example:
        >>> from PIL import Image
        >>> tf = supcon_transform(24, CIFAR10_MEAN, CIFAR10_STD)
        >>> tf(Image.new("RGB", (40, 30), (200, 10, 90))).shape
        torch.Size([3, 24, 24])
        >>> tf(torch.zeros(3, 32, 32, dtype=torch.uint8)).dtype
        torch.float32
    """
    if policy not in POLICIES:
        raise ValueError(f"Expected argument `policy` to be one of {POLICIES}, but got {policy!r}.")
    check_probability("grayscale_p", grayscale_p)
    check_probability("jitter_p", jitter_p)
    check_range("scale", scale, high=1.0)
    check_range("ratio", ratio)
    steps: list[Callable[[Any], Any]] = [v2.RandomResizedCrop(image_size, scale=scale, ratio=ratio, antialias=True)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if policy == "simclr":
        steps += [v2.RandomApply([v2.ColorJitter(*JITTER)], p=jitter_p), v2.RandomGrayscale(p=grayscale_p)]
    elif policy == "autoaugment":
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))
    elif policy == "randaugment":
        steps.append(v2.RandAugment())
    if blur:
        steps.append(v2.RandomApply([v2.GaussianBlur(blur_kernel_size(image_size), sigma=BLUR_SIGMA)], p=BLUR_P))
    return v2.Compose(steps + _to_normalized_tensor(mean, std))


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
    steps: list[Callable[[Any], Any]] = []
    if resize is not None:
        steps += [v2.Resize(resize, antialias=True), v2.CenterCrop(image_size)]
    return v2.Compose(steps + _to_normalized_tensor(mean, std))


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
