"""``DigitsDataModule``: scikit-learn's 1,797 handwritten 8x8 digits, a real data set that needs no download.

It is the data set of the quick start: small enough that SupCon with a small CNN trains in a minute or two on a
laptop CPU, real enough that the accuracy means something. The images are upsampled once to ``image_size`` and kept
in memory as one uint8 tensor; the augmentation (:data:`DIGITS_RECIPE`) is a mild random resized crop and a small
random rotation and shift (one warp per view on the CPU), and no flip (digits are not mirror-symmetric).

- Data: the UCI "Optical Recognition of Handwritten Digits" test set, bundled with scikit-learn as
  ``sklearn.datasets.load_digits`` (pixel values 0..16).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor

from lightning_supcon.data.base import MultiViewDataModule, Split
from lightning_supcon.data.labels import LabelledDataset
from lightning_supcon.data.recipe import AugmentRecipe

#: The digits recipe: a mild crop, a rotation of up to 10 degrees and a shift of up to 10% of the side; no flip
#: (digits are not mirror-symmetric) and no colour step (one channel).
DIGITS_RECIPE = AugmentRecipe(
    scale=(0.5, 1.0), ratio=(0.8, 1.25), flip=False, degrees=10.0, translate=0.1, colour="none"
)


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


class DigitsDataModule(MultiViewDataModule):
    """scikit-learn's handwritten digits: 10 classes, 1 channel, a fixed stratified train/val split.

    ``mean`` and ``std`` are measured on the training split. The test set is the validation set.

    Args:
        image_size: Side the 8x8 digits are upsampled to (bilinear), e.g. 16 or 32.
        val_fraction: Fraction of the 1,797 images held out for validation, stratified by class.
        split_seed: Seed of the train/val split.
        augment: The augmentation recipe; default :data:`DIGITS_RECIPE`.
        **kwargs: The arguments of :class:`MultiViewDataModule` (``batch_size``, ``n_views``, ``augment_on``, ...).

    Raises:
        ValueError: For ``image_size < 8`` or ``val_fraction`` outside ``(0, 1)``.

    Example:
        >>> dm = DigitsDataModule(batch_size=32, n_views=2)
        >>> views, labels = next(iter(dm.train_dataloader()))
        >>> views.shape, labels.shape, dm.num_classes
        (torch.Size([32, 2, 1, 16, 16]), torch.Size([32]), 10)
        >>> len(dm.dataset("train")), len(dm.dataset("val")), dm.dataset("test")
        (1437, 360, None)
    """

    num_classes = 10
    in_channels = 1

    def __init__(
        self,
        image_size: int = 16,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        augment: AugmentRecipe = DIGITS_RECIPE,
        **kwargs: Any,
    ) -> None:
        super().__init__(augment=augment, **kwargs)
        if image_size < 8:
            raise ValueError(f"Expected argument `image_size` to be >= 8, but got {image_size}.")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"Expected argument `val_fraction` to be in (0, 1), but got {val_fraction}.")
        self.image_size = image_size
        images, labels = load_digit_images(image_size)
        train_idx, val_idx = train_test_split(
            torch.arange(len(labels)).numpy(), test_size=val_fraction, stratify=labels.numpy(), random_state=split_seed
        )
        self._train = LabelledDataset(images[train_idx], labels[train_idx])
        self._val = LabelledDataset(images[val_idx], labels[val_idx])
        pixels = images[train_idx].float().div(255.0)
        self.mean = (round(pixels.mean().item(), 4),)
        self.std = (round(pixels.std().item(), 4),)

    def dataset(self, split: Split) -> LabelledDataset | None:
        """The seeded stratified training or validation part of the digits; no test or OOD split."""
        return {"train": self._train, "val": self._val}.get(split)
