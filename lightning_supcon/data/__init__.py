"""Data: multi-view DataModules for SupCon and their augmentation recipe, built for the CPU and for the device.

The names a user writes: a DataModule (one per source, or :class:`MultiViewDataModule` to subclass, returning
:class:`LabelledDataset` s), a recipe, a sampler, the transforms. The rest is imported from its module.
"""

from lightning_supcon.data.base import MultiViewDataModule
from lightning_supcon.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from lightning_supcon.data.csv_list import CsvDataModule, read_image_list
from lightning_supcon.data.device_augment import DeviceMultiViewAugment
from lightning_supcon.data.digits import DIGITS_RECIPE, DigitsDataModule
from lightning_supcon.data.hf import HFDataModule
from lightning_supcon.data.image_folder import ImageFolderDataModule, scan_folder
from lightning_supcon.data.images import IMAGENET_RECIPE, ImageDataModule, LabelledImages, load_image
from lightning_supcon.data.labels import LabelledDataset
from lightning_supcon.data.loading import EpochSampler, ResumableLoader
from lightning_supcon.data.multilabel import MultilabelDigitsDataModule
from lightning_supcon.data.recipe import SIMCLR, AugmentRecipe
from lightning_supcon.data.sampler import ClassBalancedSampler
from lightning_supcon.data.subsets import label_subset, stratified_subset
from lightning_supcon.data.transforms import MultiViewTransform, eval_transform, supcon_transform

__all__ = [
    "DIGITS_RECIPE",
    "IMAGENET_RECIPE",
    "SIMCLR",
    "AugmentRecipe",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "ClassBalancedSampler",
    "CsvDataModule",
    "DeviceMultiViewAugment",
    "DigitsDataModule",
    "EpochSampler",
    "HFDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "LabelledDataset",
    "LabelledImages",
    "MultiViewDataModule",
    "MultiViewTransform",
    "MultilabelDigitsDataModule",
    "ResumableLoader",
    "eval_transform",
    "label_subset",
    "load_image",
    "read_image_list",
    "scan_folder",
    "stratified_subset",
    "supcon_transform",
]
