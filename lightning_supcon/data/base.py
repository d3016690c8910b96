"""``MultiViewDataModule``: the base to subclass for a new data set.

A subclass names its data (``num_classes``, ``in_channels``, ``image_size``, ``mean``, ``std``) and returns data
sets of raw ``(image, label)`` samples, the image a PIL image or a uint8 ``(C, H, W)`` tensor; the base makes the
multi-view training batches of SupCon [0] and the clean evaluation batches, on the CPU in the loader workers
(``augment_on="cpu"``) or batched on the model's device (``augment_on="device"``).

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362

Example:
    Your own data, here 32x32 RGB images in a ``.npz`` file as uint8 arrays ``(N, 32, 32, 3)`` with labels:

    >>> import numpy as np
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> class MyDataModule(MultiViewDataModule):
    ...     num_classes, in_channels, image_size = 4, 3, 32
    ...     mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    ...
    ...     def __init__(self, path: str = "my_data.npz", **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.path = path
    ...
    ...     def _split(self, name: str) -> TensorDataset:
    ...         data = np.load(self.path)
    ...         images = torch.from_numpy(data[f"{name}_images"]).permute(0, 3, 1, 2)  # (N, 3, 32, 32) uint8
    ...         return TensorDataset(images, torch.from_numpy(data[f"{name}_labels"]))
    ...
    ...     def train_dataset(self) -> TensorDataset:
    ...         return self._split("train")
    ...
    ...     def val_dataset(self) -> TensorDataset:
    ...         return self._split("val")

    With a small file to try it:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "my_data.npz")
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    >>> np.savez(path, train_images=images[:40], train_labels=np.arange(40) % 4, val_images=images[40:],
    ...          val_labels=np.arange(10) % 4)
    >>> dm = MyDataModule(path, batch_size=8, n_views=2)
    >>> views, labels = next(iter(dm.train_dataloader()))
    >>> views.shape, views.dtype, labels.dtype
    (torch.Size([8, 2, 3, 32, 32]), torch.float32, torch.int64)
    >>> images, labels = next(iter(dm.val_dataloader()))
    >>> images.shape
    torch.Size([8, 3, 32, 32])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, Protocol

import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from lightning_supcon.data.device_augment import DeviceMultiViewAugment, DeviceNormalize
from lightning_supcon.data.transforms import (
    GRAYSCALE_P,
    JITTER_P,
    POLICIES,
    MultiViewTransform,
    Policy,
    check_range,
    supcon_transform,
)
from lightning_supcon.data.transforms import eval_transform as make_eval_transform

#: The policies the batched device path implements.
DEVICE_POLICIES: tuple[str, ...] = ("simclr", "crop_flip")

AugmentOn = Literal["cpu", "device"]
AUGMENT_ON: tuple[str, ...] = ("cpu", "device")


class SampleDataset(Protocol):
    """What a subclass's data sets must be: indexable ``(image, label)`` samples with a length."""

    def __getitem__(self, index: int) -> Any: ...

    def __len__(self) -> int: ...


class MappedDataset(Dataset):
    """``(transform(image), int(label))`` for each ``(image, label)`` sample of ``data``."""

    def __init__(self, data: SampleDataset, transform: Callable[[Any], Tensor]) -> None:
        self.data = data
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.data[index]
        return self.transform(image), int(label)


class MultiViewDataModule(pl.LightningDataModule):
    """Multi-view training batches and clean evaluation batches from raw ``(image, label)`` data sets.

    Batches:
        - ``train_dataloader``: ``(views, labels)``, views float ``(B, n_views, C, H, W)`` normalised, labels
          int64 ``(B,)``; shuffled, incomplete last batch dropped so every DDP rank sees the same shape. With
          ``augment_on="device"`` the loader yields uint8 ``(B, C, H, W)`` images and :meth:`on_after_batch_transfer`
          makes the views on the device (so iterate it through a ``Trainer``).
        - ``val_dataloader``, ``test_dataloader``, ``predict_dataloader``, ``train_eval_dataloader``:
          ``(images, labels)``, images float ``(B, C, H, W)`` normalised, not augmented, in order; under DDP each
          sample goes to exactly one rank (no padding repeats), so evaluation metrics count every sample once.
          When the attached LightningModule has ``wants_train_bank = True``, ``val_dataloader`` returns
          ``[val, train_eval]``, the second the clean training set (for a kNN bank or an online probe). With
          ``augment_on="device"`` these loaders yield uint8 and the hook normalises on the device.

    Subclasses set ``num_classes``, ``in_channels``, ``image_size``, ``mean`` and ``std`` (class attributes or in
    ``__init__``), implement ``train_dataset()`` and ``val_dataset()`` and may implement ``test_dataset()``
    (default: the validation set). To change the recipe, override ``train_transform``/``eval_transform`` (CPU
    path) or ``decode_transform``/``device_augment`` (device path). Lightning inserts the training loader's
    ``DistributedSampler``.
    Lightning runs this module's ``on_after_batch_transfer`` instead of the LightningModule's when both define it,
    so models should not define their own.

    Args:
        batch_size: Training batch size per device (samples, each with ``n_views`` views).
        n_views: Augmented views per training sample, >= 1.
        num_workers: Data-loader worker processes; 0 loads in the main process.
        augment_on: ``"cpu"``: augment each sample in the loader workers (torchvision); ``"device"``: the workers
            only decode and the views are made batched on the model's device (kornia), fastest on a GPU.
        eval_batch_size: Batch size of the clean loaders; ``None`` uses ``batch_size``.
        pin_memory: Pin loader memory (faster host-to-GPU copies).
        drop_last: Drop the incomplete last training batch.
        crop_scale: Area-fraction range of the random resized crop; ``None`` uses the data set's default.
        policy: Colour recipe: ``"simclr"`` (jitter + grayscale), ``"crop_flip"`` (none: the reference code's
            recipe for cross-entropy and the linear stage), ``"autoaugment"`` or ``"randaugment"`` (CPU only).
        blur: Add SimCLR's Gaussian blur; ``None`` uses the data set's default (on for ImageNet-sized images).

    Raises:
        ValueError: For ``batch_size``, ``n_views`` or ``eval_batch_size`` < 1, ``num_workers`` < 0, an unknown
            ``augment_on`` or ``policy``, a bad ``crop_scale``, or ``policy`` other than ``"simclr"`` or
            ``"crop_flip"`` on the device.
    """

    num_classes: int
    in_channels: int = 3
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_crop_scale: tuple[float, float] = (0.2, 1.0)
    default_blur: bool = False

    def __init__(
        self,
        batch_size: int = 256,
        n_views: int = 2,
        num_workers: int = 0,
        augment_on: AugmentOn = "cpu",
        eval_batch_size: int | None = None,
        pin_memory: bool = False,
        drop_last: bool = True,
        crop_scale: tuple[float, float] | None = None,
        policy: Policy = "simclr",
        blur: bool | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("n_views", n_views), ("eval_batch_size", eval_batch_size)):
            if value is not None and value < 1:
                raise ValueError(f"Expected argument `{name}` to be >= 1, but got {value}.")
        if num_workers < 0:
            raise ValueError(f"Expected argument `num_workers` to be >= 0, but got {num_workers}.")
        if augment_on not in AUGMENT_ON:
            raise ValueError(f"Expected argument `augment_on` to be one of {AUGMENT_ON}, but got {augment_on!r}.")
        if policy not in POLICIES:
            raise ValueError(f"Expected argument `policy` to be one of {POLICIES}, but got {policy!r}.")
        if augment_on == "device" and policy not in DEVICE_POLICIES:
            raise ValueError(
                f"Expected `policy` to be one of {DEVICE_POLICIES} with `augment_on='device'`, but got {policy!r}."
            )
        if crop_scale is not None:
            check_range("crop_scale", crop_scale, high=1.0)
        self.batch_size = batch_size
        self.n_views = n_views
        self.num_workers = num_workers
        self.augment_on = augment_on
        self.eval_batch_size = eval_batch_size or batch_size
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        self.crop_scale: tuple[float, float] = (
            (crop_scale[0], crop_scale[1]) if crop_scale is not None else self.default_crop_scale
        )
        self.policy = policy
        self.blur = self.default_blur if blur is None else blur
        self._datasets: dict[str, SampleDataset | None] = {}
        self._augment: nn.Module | None = None
        self._normalize: DeviceNormalize | None = None

    # ---- what a subclass provides -------------------------------------------------------------------------
    def train_dataset(self) -> SampleDataset:
        """The training set of raw ``(PIL image or uint8 (C, H, W) tensor, int label)`` samples."""
        raise NotImplementedError(f"{type(self).__name__} must implement `train_dataset()`.")

    def val_dataset(self) -> SampleDataset:
        """The validation set of raw samples."""
        raise NotImplementedError(f"{type(self).__name__} must implement `val_dataset()`.")

    def test_dataset(self) -> SampleDataset | None:
        """The test set of raw samples; ``None`` (the default) tests on the validation set."""
        return None

    # ---- recipes, overridable ------------------------------------------------------------------------------
    def train_transform(self) -> Callable[[Any], Tensor]:
        """One augmented view of a raw image (CPU path): ``supcon_transform`` with this module's settings."""
        return supcon_transform(
            self.image_size, self.mean, self.std, scale=self.crop_scale, policy=self.policy, blur=self.blur
        )

    def eval_transform(self) -> Callable[[Any], Tensor]:
        """The clean view of a raw image (CPU path)."""
        return make_eval_transform(self.image_size, self.mean, self.std)

    def decode_transform(self, train: bool) -> Callable[[Any], Tensor]:
        """Raw image to a fixed-size uint8 ``(C, H, W)`` tensor (device path; ``train`` for the training set)."""
        return v2.Compose([v2.ToImage(), v2.ToDtype(torch.uint8, scale=True), v2.ToPureTensor()])

    def device_augment(self) -> nn.Module:
        """The batched augmentation of the device path: uint8 ``(B, C, H, W)`` to ``(B, n_views, C, H, W)``."""
        no_colour = self.policy == "crop_flip"
        return DeviceMultiViewAugment(
            self.image_size,
            self.mean,
            self.std,
            self.n_views,
            scale=self.crop_scale,
            blur=self.blur,
            jitter_p=0.0 if no_colour else JITTER_P,
            grayscale_p=0.0 if no_colour else GRAYSCALE_P,
        )

    # ---- loaders -------------------------------------------------------------------------------------------
    def _dataset(self, split: str) -> SampleDataset | None:
        if split not in self._datasets:
            make = {"train": self.train_dataset, "val": self.val_dataset, "test": self.test_dataset}[split]
            self._datasets[split] = make()
        return self._datasets[split]

    def _loader(
        self, data: SampleDataset, transform: Callable[[Any], Tensor], train: bool, sampler: Sampler[int] | None = None
    ) -> DataLoader:
        return DataLoader(
            MappedDataset(data, transform),
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=train and self.drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def _clean_loader(self, data: SampleDataset) -> DataLoader:
        transform = self.decode_transform(train=False) if self.augment_on == "device" else self.eval_transform()
        if self.trainer is None or self.trainer.world_size == 1:
            return self._loader(data, transform, train=False)
        # Under DDP every sample goes to exactly one rank: Lightning's default DistributedSampler would repeat up to
        # world_size - 1 samples to even out the shards, and the metrics would count them twice. Lightning keeps a
        # DistributedSampler it is given. Ranks may then run one batch fewer, so evaluation steps hold no collective.
        sampler = UnrepeatedDistributedSampler(
            data, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False
        )
        return self._loader(data, transform, train=False, sampler=sampler)

    def train_dataloader(self) -> DataLoader:
        """Shuffled multi-view training batches ``(views (B, V, C, H, W), labels (B,))`` (see the class doc)."""
        data = self._dataset("train")
        assert data is not None
        world_size = self.trainer.world_size if self.trainer is not None else 1
        per_rank = math.ceil(len(data) / world_size)
        if self.drop_last and per_rank < self.batch_size:
            raise ValueError(
                f"Expected at least `batch_size` ({self.batch_size}) training samples per process with "
                f"`drop_last=True`, but the training set has {len(data)} for {world_size} process(es): lower "
                "`batch_size` or set `drop_last=False`."
            )
        if self.augment_on == "device":
            return self._loader(data, self.decode_transform(train=True), train=True)
        return self._loader(data, MultiViewTransform(self.train_transform(), self.n_views), train=True)

    def train_eval_dataloader(self) -> DataLoader:
        """The training set, clean and in order (no augmentation, shuffle or drop_last)."""
        data = self._dataset("train")
        assert data is not None
        return self._clean_loader(data)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Clean validation batches; ``[val, train_eval]`` when the model has ``wants_train_bank = True``."""
        data = self._dataset("val")
        assert data is not None
        module = getattr(self.trainer, "lightning_module", None) if self.trainer is not None else None
        if getattr(module, "wants_train_bank", False):
            return [self._clean_loader(data), self.train_eval_dataloader()]
        return self._clean_loader(data)

    def test_dataloader(self) -> DataLoader:
        """Clean test batches (the validation set when ``test_dataset()`` is ``None``)."""
        data = self._dataset("test") or self._dataset("val")
        assert data is not None
        return self._clean_loader(data)

    def predict_dataloader(self) -> DataLoader:
        """The same batches as :meth:`test_dataloader`."""
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Device path: training images to views with :meth:`device_augment`, clean images normalised.

        A no-op for ``augment_on="cpu"``. Runs on the device after Lightning moved the batch there.
        """
        if self.augment_on != "device":
            return batch
        images, labels = batch
        if self.trainer is not None and self.trainer.training:
            if self._augment is None:
                self._augment = self.device_augment()
            return self._augment.to(images.device)(images), labels
        if self._normalize is None:
            self._normalize = DeviceNormalize(self.mean, self.std)
        return self._normalize.to(images.device)(images), labels
