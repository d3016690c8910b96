"""Data: multi-view DataModules for SupCon and their augmentation recipes (CPU per-sample and device batched)."""

from lightning_supcon.data.base import AUGMENT_ON, AugmentOn, MappedDataset, MultiViewDataModule, SampleDataset
from lightning_supcon.data.cifar import ArrayImageDataset, CIFAR10DataModule, CIFAR100DataModule, CIFARDataModule
from lightning_supcon.data.device_augment import DeviceMultiViewAugment, DeviceNormalize
from lightning_supcon.data.digits import (
    DigitsDataModule,
    RandomResizedCropAffine,
    digits_transform,
    load_digit_images,
)
from lightning_supcon.data.image_folder import ImageFileDataset, ImageFolderDataModule, load_rgb, scan_folder
from lightning_supcon.data.transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    POLICIES,
    MultiViewTransform,
    Policy,
    eval_transform,
    supcon_transform,
)

__all__ = [
    "AUGMENT_ON",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "POLICIES",
    "ArrayImageDataset",
    "AugmentOn",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "CIFARDataModule",
    "DeviceMultiViewAugment",
    "DeviceNormalize",
    "DigitsDataModule",
    "ImageFileDataset",
    "ImageFolderDataModule",
    "MappedDataset",
    "MultiViewDataModule",
    "MultiViewTransform",
    "Policy",
    "RandomResizedCropAffine",
    "SampleDataset",
    "digits_transform",
    "eval_transform",
    "load_digit_images",
    "load_rgb",
    "scan_folder",
    "supcon_transform",
]
