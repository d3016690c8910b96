"""The device backend: an :class:`~lightning_supcon.data.recipe.AugmentRecipe` as batched kornia augmentation.

It draws from the same distributions as the CPU backend
(:func:`~lightning_supcon.data.transforms.supcon_transform`, tested in ``tests/data/test_recipe.py``) but works on
a whole batch on the model's device, so data-loader workers only decode images. One difference: kornia's colour
jitter draws the order of its four steps once per batch, torchvision once per image. Its randomness comes from
torch's global generator on the CPU (kornia draws the parameters there), which ``PreemptionCheckpoint`` keeps in
checkpoints.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [1] Chen et al., SimCLR, ICML 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from lightning_supcon.data.normalize import ToNormalizedFloat
from lightning_supcon.data.recipe import DEVICE_COLOURS, SIMCLR, AugmentRecipe, blur_kernel_size


class DeviceMultiViewAugment(nn.Module):
    """``n_views`` independently augmented views of every image of a batch, made on the batch's device.

    The steps of ``recipe``, each with per-sample random parameters: ``RandomResizedCrop(image_size, scale,
    ratio)``, horizontal flip (``flip``), a random affine map (when ``degrees`` or ``translate`` is non-zero),
    colour jitter and grayscale (``colour="simclr"``, 3-channel images only), Gaussian blur (``blur_p > 0``), then
    the normalisation.

    Args:
        image_size: Side of the square output views.
        mean: Per-channel mean; its length fixes the number of channels.
        std: Per-channel standard deviation.
        n_views: Views per image, >= 1.
        recipe: The augmentation; its ``colour`` must be one of ``DEVICE_COLOURS``.

    Shape:
        - images: ``(B, C, H, W)``, uint8 in ``[0, 255]`` or float in ``[0, 1]``, all of one size.
        - output: ``(B, n_views, C, image_size, image_size)`` float32, normalised.

    Raises:
        ValueError: For ``n_views < 1`` or a colour step other than ``DEVICE_COLOURS`` (at construction), and for
            images that are not a ``(B, C, H, W)`` batch of ``len(mean)`` channels (when called).

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
        recipe: AugmentRecipe = SIMCLR,
    ) -> None:
        super().__init__()
        if n_views < 1:
            raise ValueError(f"Expected argument `n_views` to be >= 1, but got {n_views}.")
        if recipe.colour not in DEVICE_COLOURS:
            raise ValueError(
                f"Expected `colour` to be one of {DEVICE_COLOURS} on the device, but got {recipe.colour!r}: "
                "use `augment_on='cpu'` for it."
            )
        self.n_views = n_views
        self.recipe = recipe
        self.normalize = ToNormalizedFloat(mean, std)
        geometric: list[nn.Module] = [
            K.RandomResizedCrop((image_size, image_size), scale=recipe.scale, ratio=recipe.ratio, align_corners=False)
        ]
        if recipe.flip:
            geometric.append(K.RandomHorizontalFlip(p=0.5))
        if recipe.warps:
            geometric.append(K.RandomAffine(recipe.degrees, translate=(recipe.translate, recipe.translate), p=1.0))
        self.geometric = nn.Sequential(*geometric)
        colour: list[nn.Module] = []
        jitter, grayscale = recipe.colour_steps(len(mean))
        if jitter:
            colour.append(K.ColorJitter(*recipe.jitter_factors, p=recipe.jitter_p))
        if grayscale:
            colour.append(K.RandomGrayscale(p=recipe.grayscale_p))
        if recipe.blur_p > 0:
            k = blur_kernel_size(image_size)
            colour.append(K.RandomGaussianBlur((k, k), sigma=recipe.blur_sigma, p=recipe.blur_p))
        self.colour = nn.Sequential(*colour)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4:
            raise ValueError(
                f"Expected images of shape (B, {self.normalize.mean.numel()}, H, W), but got {tuple(images.shape)}."
            )
        batch = images.shape[0]
        x = self.normalize.to_unit(images)
        x = x.repeat_interleave(self.n_views, dim=0)  # (B * V, C, H, W), the views of a sample adjacent
        x = self.colour(self.geometric(x))
        x = self.normalize(x)
        return x.view(batch, self.n_views, *x.shape[1:])  # (B, V, C, S, S)
