"""Data: multi-view DataModules for SupCon and their augmentation recipe, built for the CPU and for the device."""

from lightning_supcon.data.base import MultiViewDataModule
from lightning_supcon.data.cifar import ArrayImageDataset, CIFAR10DataModule, CIFAR100DataModule, CIFARDataModule
from lightning_supcon.data.csv_list import CsvDataModule, read_image_list
from lightning_supcon.data.device_augment import DeviceMultiViewAugment
from lightning_supcon.data.digits import DIGITS_RECIPE, DigitsDataModule, load_digit_images
from lightning_supcon.data.hf import HFDataModule
from lightning_supcon.data.image_folder import ImageFileDataset, ImageFolderDataModule, load_rgb, scan_folder
from lightning_supcon.data.images import (
    AUTO_SAMPLE,
    CHANNELS,
    IMAGENET_RECIPE,
    Channels,
    ImageDataModule,
    ImageDataset,
    LabelledImages,
    load_image,
)
from lightning_supcon.data.loading import EpochSampler, MappedDataset, ResumableLoader, SampleDataset
from lightning_supcon.data.multilabel import DIGIT_ATTRIBUTES, MultilabelDigitsDataModule, attribute_labels
from lightning_supcon.data.normalize import ToNormalizedFloat, channel_statistics
from lightning_supcon.data.options import AUGMENT_ON, AugmentOn, check_loader_options
from lightning_supcon.data.recipe import COLOURS, DEVICE_COLOURS, SIMCLR, AugmentRecipe, Colour
from lightning_supcon.data.sampler import SAMPLERS, ClassBalancedSampler, SamplerKind
from lightning_supcon.data.subsets import dataset_labels, label_subset, stratified_subset
from lightning_supcon.data.transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiViewTransform,
    eval_transform,
    supcon_transform,
)
from lightning_supcon.data.warp import RandomResizedCropAffine

__all__ = [
    "AUGMENT_ON",
    "AUTO_SAMPLE",
    "CHANNELS",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "COLOURS",
    "DEVICE_COLOURS",
    "DIGITS_RECIPE",
    "DIGIT_ATTRIBUTES",
    "IMAGENET_MEAN",
    "IMAGENET_RECIPE",
    "IMAGENET_STD",
    "SAMPLERS",
    "SIMCLR",
    "ArrayImageDataset",
    "AugmentOn",
    "AugmentRecipe",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "CIFARDataModule",
    "Channels",
    "ClassBalancedSampler",
    "Colour",
    "CsvDataModule",
    "DeviceMultiViewAugment",
    "DigitsDataModule",
    "EpochSampler",
    "HFDataModule",
    "ImageDataModule",
    "ImageDataset",
    "ImageFileDataset",
    "ImageFolderDataModule",
    "LabelledImages",
    "MappedDataset",
    "MultiViewDataModule",
    "MultiViewTransform",
    "MultilabelDigitsDataModule",
    "RandomResizedCropAffine",
    "ResumableLoader",
    "SampleDataset",
    "SamplerKind",
    "ToNormalizedFloat",
    "attribute_labels",
    "channel_statistics",
    "check_loader_options",
    "dataset_labels",
    "eval_transform",
    "label_subset",
    "load_digit_images",
    "load_image",
    "load_rgb",
    "read_image_list",
    "scan_folder",
    "stratified_subset",
    "supcon_transform",
]
