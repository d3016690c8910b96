"""``AugmentRecipe``: one typed description of a training augmentation, from which both backends are built.

The CPU backend (:func:`~lightning_supcon.data.transforms.supcon_transform`, torchvision, per sample in the loader
workers) and the device backend (:class:`~lightning_supcon.data.device_augment.DeviceMultiViewAugment`, kornia,
batched on the model's device) read the same recipe, so a setting is written once and both draw from the same
distributions (tested in ``tests/data/test_recipe.py``).

The default is SupCon's [0] recipe, itself SimCLR's [1]: random resized crop with area fraction in ``(0.2, 1)``,
horizontal flip, colour jitter of strength 0.5 (brightness, contrast, saturation 0.4, hue 0.1) with probability
0.8, grayscale with probability 0.2. SimCLR adds for ImageNet-sized images a Gaussian blur with probability 0.5 and
sigma in ``[0.1, 2.0]`` [1, Appendix A]; SupCon also reports AutoAugment [2] and RandAugment [3] in place of the
colour steps, and its reference code trains the cross-entropy baseline and the linear stage with crop and flip
only (``colour="none"``).

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [1] Chen et al., SimCLR, ICML 2020, https://arxiv.org/abs/2002.05709
- [2] Cubuk et al., AutoAugment, CVPR 2019, https://arxiv.org/abs/1805.09501
- [3] Cubuk et al., RandAugment, NeurIPS 2020 workshops, https://arxiv.org/abs/1909.13719
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

#: The colour (appearance) step of a recipe: SimCLR's jitter + grayscale, none, or a searched policy (CPU only).
Colour = Literal["simclr", "none", "autoaugment", "randaugment"]
COLOURS: tuple[str, ...] = get_args(Colour)
#: The colour steps the batched device backend implements.
DEVICE_COLOURS: tuple[str, ...] = ("simclr", "none")


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


def blur_kernel_size(image_size: int) -> int:
    """The odd kernel side closest below 10% of the image side, at least 3 ([1], Appendix A).

    Example:
        >>> blur_kernel_size(224), blur_kernel_size(32)
        (23, 3)
    """
    return max(3, int(0.1 * image_size) // 2 * 2 + 1)


@dataclass(frozen=True)
class AugmentRecipe:
    """The random steps that make one training view, in order: geometry, colour, blur.

    Geometry: a random resized crop (area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``),
    then a horizontal flip with probability 0.5 (``flip``), then, when ``degrees`` or ``translate`` is non-zero, a
    rotation uniform in ``[-degrees, degrees]`` and a shift uniform in ``[-translate, translate]`` times the side
    (the CPU backend does crop and affine map as one warp). Colour (3-channel images only): for ``"simclr"`` colour
    jitter of strength ``jitter`` with probability ``jitter_p``, then grayscale with probability ``grayscale_p``;
    ``"autoaugment"`` / ``"randaugment"``: torchvision's policy (ImageNet policy / defaults, CPU backend only);
    ``"none"``: no colour step. Blur: a Gaussian blur with probability ``blur_p``, sigma uniform in
    ``blur_sigma``, kernel :func:`blur_kernel_size`. The normalisation (mean, std) belongs to the data set, not to
    the recipe.

    On the command line and in YAML the fields nest under the DataModule's ``augment`` argument, e.g.
    ``--data.init_args.augment.flip false`` or ``augment: {colour: none}``; unset fields keep the data set's
    recipe.

    Args:
        scale: Range of the crop's area as a fraction of the image's, ``0 < a <= b <= 1``.
        ratio: Range of the crop's aspect ratio (width / height).
        flip: Random horizontal flip (probability 0.5).
        degrees: Maximum absolute rotation, in degrees, >= 0.
        translate: Maximum absolute shift as a fraction of the side, in ``[0, 1]``.
        colour: The colour step, one of ``COLOURS``.
        jitter: SimCLR's colour-jitter strength ``s``: brightness, contrast and saturation ``0.8 s``, hue
            ``0.2 s`` [1, Appendix A], so that ``s = 0.5`` gives ``(0.4, 0.4, 0.4, 0.1)``; >= 0, ``s <= 2.5``.
        jitter_p: Probability of the colour jitter (``colour="simclr"``).
        grayscale_p: Probability of the grayscale step (``colour="simclr"``).
        blur_p: Probability of the Gaussian blur; 0 leaves it out.
        blur_sigma: Range of the blur's standard deviation, in pixels.

    Raises:
        ValueError: For a bad range, a probability outside ``[0, 1]``, an unknown ``colour``, negative
            ``degrees`` or ``jitter``, ``jitter > 2.5`` (hue beyond 0.5) or ``translate`` outside ``[0, 1]``.

    Example:
        >>> recipe = AugmentRecipe(colour="none")
        >>> recipe.scale, recipe.flip, recipe.colour
        ((0.2, 1.0), True, 'none')
        >>> AugmentRecipe().jitter_factors
        (0.4, 0.4, 0.4, 0.1)
        >>> AugmentRecipe(jitter_p=1.5)
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `jitter_p` to be in [0, 1], but got 1.5.
    """

    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    degrees: float = 0.0
    translate: float = 0.0
    colour: Colour = "simclr"
    jitter: float = 0.5
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self) -> None:
        for name in ("scale", "ratio", "blur_sigma"):  # lists from YAML or Python become tuples
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        check_range("scale", self.scale, high=1.0)
        check_range("ratio", self.ratio)
        check_range("blur_sigma", self.blur_sigma)
        for name in ("jitter_p", "grayscale_p", "blur_p"):
            check_probability(name, getattr(self, name))
        if self.colour not in COLOURS:
            raise ValueError(f"Expected argument `colour` to be one of {COLOURS}, but got {self.colour!r}.")
        if not 0.0 <= self.jitter <= 2.5:
            raise ValueError(f"Expected argument `jitter` to be in [0, 2.5], but got {self.jitter}.")
        if self.degrees < 0 or not 0 <= self.translate <= 1:
            raise ValueError(
                f"Expected `degrees` >= 0 and `translate` in [0, 1], but got {self.degrees}, {self.translate}."
            )

    @property
    def jitter_factors(self) -> tuple[float, float, float, float]:
        """``(brightness, contrast, saturation, hue)`` of the colour jitter, from the strength ``jitter``."""
        s = self.jitter
        return (round(0.8 * s, 6), round(0.8 * s, 6), round(0.8 * s, 6), round(0.2 * s, 6))

    @property
    def warps(self) -> bool:
        """Whether the geometry has a rotation or shift after the crop."""
        return self.degrees > 0 or self.translate > 0

    def colour_steps(self, channels: int) -> tuple[bool, bool]:
        """Whether the jitter and the grayscale steps apply to images with ``channels`` channels (RGB only)."""
        rgb = channels == 3 and self.colour == "simclr"
        return rgb and self.jitter_p > 0, rgb and self.grayscale_p > 0


#: SupCon's CIFAR recipe, the default: crop (0.2, 1), flip, jitter 0.5 with p 0.8, grayscale p 0.2, no blur.
SIMCLR = AugmentRecipe()
