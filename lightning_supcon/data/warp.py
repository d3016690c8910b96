"""``RandomResizedCropAffine``: a random resized crop, rotation and shift as one bilinear warp (PIL), per sample.

The CPU backend's geometry when a recipe has a rotation or shift (digits); the device backend draws the same steps
batched with kornia's ``RandomResizedCrop`` and ``RandomAffine``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from lightning_supcon.data.recipe import AugmentRecipe


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
        - image: uint8 ``(1, H, W)`` or ``(3, H, W)``, or a PIL image (grayscale or RGB).
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
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        degrees: float = 0.0,
        translate: float = 0.0,
    ) -> None:
        AugmentRecipe(scale=scale, ratio=ratio, degrees=degrees, translate=translate)  # the recipe's checks
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

    def params(self, height: int, width: int) -> tuple[tuple[int, int, int, int], tuple[float, ...]]:
        """A random crop box ``(left, top, right, bottom)`` and the affine map from the output to the crop.

        The map ``(a, b, c, d, e, f)`` sends output point ``(x, y)`` to ``(ax + by + c, dx + ey + f)`` in the crop.
        """
        u = torch.rand(25).tolist()  # one draw from torch's generator (seeded per sample by the training loader)
        left, top, right, bottom = box = self.crop_box(height, width, u)
        angle = math.radians(self.degrees * (2 * u[22] - 1))
        shift_x, shift_y = (self.translate * self.size * (2 * v - 1) for v in u[23:25])
        cos, sin, centre = math.cos(angle), math.sin(angle), self.size / 2
        # output p -> q = R(-angle) (p - centre - shift) + centre in the resized crop -> q * crop / size in the crop
        qx = cos * (-centre - shift_x) + sin * (-centre - shift_y) + centre
        qy = -sin * (-centre - shift_x) + cos * (-centre - shift_y) + centre
        sx, sy = (right - left) / self.size, (bottom - top) / self.size
        return box, (cos * sx, sin * sx, qx * sx, -sin * sy, cos * sy, qy * sy)

    def __call__(self, image: Tensor | Image.Image) -> Tensor:
        if not isinstance(image, Image.Image):
            array = image.permute(1, 2, 0).numpy()
            image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        box, coefficients = self.params(image.height, image.width)
        # cut the crop first (no resampling), so that what the rotation and shift bring in is black, as in the
        # two-step recipe and its batched twin, not the image around the crop
        crop = image.crop(box)
        size = (self.size, self.size)
        out = crop.transform(size, Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)
        out_array = np.asarray(out).copy()  # writable, for torch
        return torch.from_numpy(out_array).view(self.size, self.size, -1).permute(2, 0, 1).contiguous()

    @classmethod
    def from_recipe(cls, size: int, recipe: AugmentRecipe) -> RandomResizedCropAffine:
        """The crop and affine steps of ``recipe``."""
        return cls(size, recipe.scale, recipe.ratio, recipe.degrees, recipe.translate)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
            f"degrees={self.degrees}, translate={self.translate})"
        )
