"""``MultiViewDataModule``: the base to subclass for a new data set.

A subclass names its data (``num_classes``, ``in_channels``, ``image_size``, ``mean``, ``std``) and returns each
split from one method, ``dataset(split)``, as a :class:`~lightning_supcon.data.labels.LabelledDataset`: raw
``(image, label)`` samples, the image a PIL image or a uint8 ``(C, H, W)`` tensor, that carry their labels aligned
with them (``None`` for a split it does not have: ``"test"``, or ``"ood"``, samples of no training class for the
out-of-distribution metrics); the base makes the
multi-view training batches of SupCon [0] from its :class:`~lightning_supcon.data.recipe.AugmentRecipe` (argument
``augment``), on the CPU in the loader workers (``augment_on="cpu"``) or batched on the model's device
(``augment_on="device"``), and the clean evaluation batches. A training run preempted mid-epoch resumes with the
same batches and augmentations as an uninterrupted one (:mod:`lightning_supcon.data.loading`).

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362

Example:
    Your own data, here 32x32 RGB images in a ``.npz`` file as uint8 arrays ``(N, 32, 32, 3)`` with labels:

    >>> import numpy as np
    >>> import torch
    >>> from lightning_supcon.data.labels import LabelledDataset
    >>> class MyDataModule(MultiViewDataModule):
    ...     num_classes, in_channels, image_size = 4, 3, 32
    ...     mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    ...
    ...     def __init__(self, path: str = "my_data.npz", **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.path = path
    ...
    ...     def dataset(self, split: str) -> LabelledDataset | None:
    ...         data = np.load(self.path)
    ...         if f"{split}_images" not in data:
    ...             return None  # no such split: here "test" and "ood"
    ...         images = torch.from_numpy(data[f"{split}_images"]).permute(0, 3, 1, 2)  # (N, 3, 32, 32) uint8
    ...         return LabelledDataset(images, data[f"{split}_labels"])

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
    >>> images.shape, dm.classes
    (torch.Size([8, 3, 32, 32]), ['0', '1', '2', '3'])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from lightning_supcon.data.device_augment import DeviceMultiViewAugment
from lightning_supcon.data.labels import LabelledDataset, Split, check_predict_split, check_split
from lightning_supcon.data.loading import (
    AugmentOn,
    EpochSampler,
    MappedDataset,
    ResumableLoader,
    check_enough_samples,
    check_loader_options,
    eval_order,
    eval_sampler,
    initial_seed,
)
from lightning_supcon.data.normalize import ToNormalizedFloat
from lightning_supcon.data.recipe import SIMCLR, AugmentRecipe
from lightning_supcon.data.sampler import SamplerKind, check_sampler, train_sampler
from lightning_supcon.data.subsets import Unlabelled, check_label_fraction, label_subset
from lightning_supcon.data.transforms import MultiViewTransform, decode_steps, supcon_transform


class MultiViewDataModule(pl.LightningDataModule):
    """Multi-view training batches and clean evaluation batches from raw ``(image, label)`` data sets.

    Batches:
        - ``train_dataloader``: ``(views, labels)``, views float ``(B, n_views, C, H, W)`` normalised, labels
          int64 ``(B,)``; shuffled, incomplete last batch dropped so every DDP rank sees the same shape. With
          ``augment_on="device"`` the loader yields uint8 ``(B, C, H, W)`` images and :meth:`on_after_batch_transfer`
          makes the views on the device (so iterate it through a ``Trainer``). A mid-epoch resume is exact.
        - ``val_dataloader``, ``test_dataloader``, ``predict_dataloader``, ``train_eval_dataloader``:
          ``(images, labels)``, images float ``(B, C, H, W)`` normalised, not augmented. Validation and test
          batches follow one fixed permutation of the split (:data:`EVAL_ORDER_SEED`), so a batch-wise metric such
          as ``val/loss`` does not depend on the order the source lists the samples in; ``predict`` and the clean
          training set are in data-set order. Under DDP each sample goes to exactly one rank (no padding repeats),
          so evaluation metrics count every sample once. With ``augment_on="device"`` these loaders yield uint8
          and the hook normalises on the device.

    Subclasses set ``num_classes`` (or override :attr:`classes`, the class names), ``in_channels``, ``image_size``,
    ``mean`` and ``std`` (class attributes or in ``__init__``) and implement one method, :meth:`dataset`, that
    returns a split as a :class:`~lightning_supcon.data.labels.LabelledDataset` whose ``labels`` are those of its
    samples: ``"train"`` and ``"val"`` are required; ``"test"`` and ``"ood"`` may be ``None`` (no test split:
    ``test`` reports the validation set, with a warning; no OOD split: :meth:`ood_dataloader` is ``None``). A data
    set with its own recipe declares ``augment: AugmentRecipe = ITS_RECIPE`` in its ``__init__`` (``--help`` shows
    it); one whose images need resizing first overrides :meth:`decode_transform`. Both backends follow ``augment``.
    Lightning runs this module's ``on_after_batch_transfer`` instead of the LightningModule's, so models should not
    define their own.

    Args:
        batch_size: Training batch size per device (samples, each with ``n_views`` views).
        n_views: Augmented views per training sample, >= 1.
        num_workers: Data-loader worker processes; 0 loads in the main process.
        augment_on: ``"cpu"``: augment each sample in the loader workers (torchvision); ``"device"``: the workers
            only decode and the views are made batched on the model's device (kornia), fastest on a GPU.
        eval_batch_size: Batch size of the clean loaders; ``None`` uses ``batch_size``.
        pin_memory: Pin loader memory (faster host-to-GPU copies).
        drop_last: Drop the incomplete last training batch.
        augment: The augmentation recipe of the training views (CLI: ``--data.init_args.augment.flip false``).
        predict_split: The clean split ``predict`` embeds, ``"train"``, ``"val"``, ``"test"`` or ``"ood"`` (an
            out-of-distribution split, for ``lightning-supcon-eval --ood``); ValueError else.
        label_fraction: Train (and build the kNN bank) on this class-stratified fraction of the training labels
            (:func:`~lightning_supcon.data.subsets.label_subset`); 1: all. ``subset_seed``: its seed. ``unlabelled``:
            ``"drop"`` the other samples, or keep them as ``"unknown"`` (label -1: semi-supervised SupCon).
        sampler: ``"random"``, or ``"balanced"``: ``samples_per_class`` samples of each of ``global batch /
            samples_per_class`` classes per global batch (:class:`~lightning_supcon.data.sampler.ClassBalancedSampler`).

    Raises:
        ValueError: For bad loader options (:func:`check_loader_options`), a bad ``label_fraction``, ``sampler`` or
            ``samples_per_class``.
        TypeError, ValueError: On first use, for a split that is not a ``LabelledDataset``, is empty, or has class
            indices out of range (:func:`~lightning_supcon.data.labels.check_split`).
        NotImplementedError: On first use, for ``num_classes``, ``mean`` or ``std`` that a subclass did not set
            (not an ``AttributeError``, which ``hasattr`` and the CLI's links take for "absent"), or for a
            ``dataset(split)`` that raises ``KeyError`` for a split it lacks instead of returning ``None``.
    """

    in_channels: int = 3
    image_size: int

    def __init__(
        self,
        batch_size: int = 256,
        n_views: int = 2,
        num_workers: int = 0,
        augment_on: AugmentOn = "cpu",
        eval_batch_size: int | None = None,
        pin_memory: bool = False,
        drop_last: bool = True,
        augment: AugmentRecipe = SIMCLR,
        predict_split: Split = "test",
        label_fraction: float = 1.0,
        subset_seed: int = 0,
        unlabelled: Unlabelled = "drop",
        sampler: SamplerKind = "random",
        samples_per_class: int = 4,
    ) -> None:
        super().__init__()
        check_loader_options(batch_size, n_views, eval_batch_size, num_workers, augment_on, augment)
        check_label_fraction(label_fraction, unlabelled, sampler)
        check_sampler(sampler, samples_per_class)
        self.label_fraction, self.subset_seed, self.unlabelled = label_fraction, subset_seed, unlabelled
        self.sampler, self.samples_per_class = sampler, samples_per_class
        self.batch_size, self.n_views, self.num_workers, self.augment_on = batch_size, n_views, num_workers, augment_on
        self.eval_batch_size = eval_batch_size or batch_size
        self.pin_memory, self.drop_last, self.augment = pin_memory, drop_last, augment
        self.predict_split = check_predict_split(predict_split)
        self.seed = initial_seed()
        self._datasets: dict[str, LabelledDataset | None] = {}
        self._device_augment: DeviceMultiViewAugment | None = None
        self._normalize: ToNormalizedFloat | None = None
        self._train_loader: ResumableLoader | None = None
        self._train_loader_state: dict[str, int] | None = None

    def dataset(self, split: Split) -> LabelledDataset | None:
        """The raw ``(PIL image or uint8 (C, H, W) tensor, label)`` samples of ``split``, their labels carried:
        class indices (-1: unknown) or multi-hot rows. ``"train"`` and ``"val"`` must exist; ``None`` for a
        ``"test"`` or ``"ood"`` split the data set does not have (the labels of ``"ood"`` samples are not read: the
        loader gives them -1). Called once per split (the base caches it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement `dataset(split)`.")

    @property
    def classes(self) -> list[str]:
        """The class names, a class index's name at its position: ``"0" .. str(num_classes - 1)`` unless the source
        names them. Saved in the DataModule's state (hence in checkpoints) and shown wherever a class is shown."""
        return [str(i) for i in range(self.num_classes)]

    @property
    def num_classes(self) -> int:
        """The number of classes (labels per sample for multi-label data): as a subclass sets it, else the number
        of :attr:`classes` a subclass names."""
        if "_num_classes" in vars(self):
            return int(self._num_classes)
        if type(self).classes is MultiViewDataModule.classes:
            raise NotImplementedError(f"{type(self).__name__} must set `num_classes` or override `classes`.")
        return len(self.classes)

    @num_classes.setter
    def num_classes(self, value: int) -> None:
        self._num_classes = value

    @property
    def mean(self) -> tuple[float, ...]:
        """The per-channel mean of the normalisation, 0-1 pixel units, one value per input channel."""
        return self._statistic("mean")

    @mean.setter
    def mean(self, value: tuple[float, ...]) -> None:
        self._mean, self._normalize = tuple(value), None

    @property
    def std(self) -> tuple[float, ...]:
        """The per-channel standard deviation of the normalisation, 0-1 pixel units, > 0 (a measured one is floored at
        one grey level, :func:`~lightning_supcon.data.normalize.channel_statistics`)."""
        return self._statistic("std")

    @std.setter
    def std(self, value: tuple[float, ...]) -> None:
        self._std, self._normalize = tuple(value), None

    def _statistic(self, name: str) -> tuple[float, ...]:
        value: tuple[float, ...] | None = vars(self).get(f"_{name}")
        if value is None:
            raise NotImplementedError(f"{type(self).__name__} must set `{name}` (one value per channel).")
        return value

    def decode_transform(self, train: bool) -> Callable[[Any], Tensor]:
        """Raw image to a fixed-size uint8 ``(C, H, W)`` tensor: the clean view (``train=False``, both backends) or
        the image the device backend crops its training views from (``train=True``). Default: convert only."""
        return v2.Compose(decode_steps(self.image_size))

    def train_transform(self) -> Callable[[Any], Tensor]:
        """One augmented view of a raw image: the CPU backend of ``augment``."""
        return supcon_transform(self.image_size, self.mean, self.std, self.augment)

    def eval_transform(self) -> Callable[[Any], Tensor]:
        """The clean view of a raw image on the CPU: :meth:`decode_transform` and the normalisation."""
        return v2.Compose([self.decode_transform(train=False), self.normalize])

    def device_augment(self) -> DeviceMultiViewAugment:
        """uint8 ``(B, C, H, W)`` to views ``(B, n_views, C, H, W)``: the device backend of ``augment``."""
        return DeviceMultiViewAugment(self.image_size, self.mean, self.std, self.n_views, self.augment)

    @property
    def normalize(self) -> ToNormalizedFloat:
        """The uint8 -> normalised float conversion with this data set's ``mean`` and ``std``."""
        if self._normalize is None:
            self._normalize = ToNormalizedFloat(self.mean, self.std)
        return self._normalize

    def _dataset(self, split: Split) -> LabelledDataset | None:
        """The one cache of the splits: each built once, checked, the training set cut to ``label_fraction`` and
        the OOD samples labelled -1 (no training class)."""
        if split not in self._datasets:
            try:
                multilabel = bool(getattr(self, "multilabel", False))
                data = check_split(type(self).__name__, split, self.dataset(split), self.num_classes, multilabel)
            except KeyError as error:  # e.g. `{"train": ..., "val": ...}[split]`
                raise NotImplementedError(
                    f"{type(self).__name__}.dataset({split!r}) raised KeyError {error}: return None for a split the "
                    "data set does not have."
                ) from error
            if split == "train":
                assert data is not None
                data = label_subset(data, self.label_fraction, self.subset_seed, self.unlabelled)
            if split == "ood" and data is not None:
                data = data.relabel(np.full(len(data), -1, dtype=np.int64))
            self._datasets[split] = data
        return self._datasets[split]

    def _present(self, split: Split) -> LabelledDataset:
        data = self._dataset(split)
        assert data is not None, f"no {split} split"
        return data

    def _loader(self, data: LabelledDataset, transform: Callable[[Any], Tensor], **options: Any) -> Any:
        loader = ResumableLoader if isinstance(options.get("sampler"), EpochSampler) else DataLoader
        # A generator of its own: a new iterator then draws no seed from torch's global generator, whose state a
        # resumed run restores (the device backend draws its augmentations from it).
        return loader(
            MappedDataset(data, transform),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator(),
            **options,
        )

    def _clean_loader(self, data: LabelledDataset, permuted: bool = False, may_be_empty: bool = False) -> DataLoader:
        if permuted:
            data = data.subset(eval_order(len(data)))
        sampler = eval_sampler(data, self.trainer, may_be_empty)
        transform = self.decode_transform(False) if self.augment_on == "device" else self.eval_transform()
        return self._loader(data, transform, batch_size=self.eval_batch_size, sampler=sampler)

    def train_dataloader(self) -> ResumableLoader:
        """Shuffled multi-view training batches ``(views (B, V, C, H, W), labels (B,))`` (see the class doc)."""
        data = self._present("train")
        world_size, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        check_enough_samples(len(data), world_size, self.batch_size, self.drop_last)
        strategy = getattr(self.trainer, "strategy", None)
        if world_size > 1 and strategy is not None:
            self.seed = int(strategy.broadcast(self.seed, src=0))  # one order on all ranks, even unseeded
        on_cpu = self.augment_on == "cpu"
        transform = MultiViewTransform(self.train_transform(), self.n_views) if on_cpu else self.decode_transform(True)
        sampler = train_sampler(
            self.sampler, data, self.seed, self.batch_size, self.samples_per_class, world_size, rank
        )
        loader = self._loader(data, transform, batch_size=self.batch_size, sampler=sampler, drop_last=self.drop_last)
        if self._train_loader_state is not None:
            loader.load_state_dict(self._train_loader_state)
        self._train_loader, self._train_loader_state = loader, None
        return loader

    def train_eval_dataloader(self) -> DataLoader:
        """The training set, clean and in order (no augmentation, shuffle or drop_last)."""
        return self._clean_loader(self._present("train"))

    def val_dataloader(self) -> DataLoader:
        """Clean validation batches, in the fixed evaluation order."""
        return self._clean_loader(self._present("val"), permuted=True)

    def test_dataloader(self) -> DataLoader:
        """Clean test batches, in the fixed evaluation order; the validation set, with a warning, when there is no
        test set."""
        data = self._dataset("test")
        if data is None:
            rank_zero_warn(
                f"{type(self).__name__} has no test split: `test` reports the validation split as test/* (give it a "
                "test split to test on held-out data)."
            )
        return self._clean_loader(data if data is not None else self._present("val"), permuted=True)

    def ood_dataloader(self) -> DataLoader | None:
        """Clean batches ``(images, labels)`` of the out-of-distribution split, labels all -1, in data-set order and
        under DDP each sample on exactly one rank; ``None`` when the data set has none. A model with OOD metrics on
        reads it at the end of each evaluation epoch (:mod:`~lightning_supcon.utils.bank`); a rank may get none."""
        data = self._dataset("ood")
        return None if data is None else self._clean_loader(data, may_be_empty=True)

    def predict_dataloader(self) -> DataLoader:
        """Clean batches of ``predict_split``, in data-set order (the validation set for ``"test"`` when there is no
        test set).

        Raises:
            ValueError: For ``predict_split="ood"`` when the data set has no OOD split.
        """
        split: Split = self.predict_split
        if split == "test" and self._dataset("test") is None:
            split = "val"
        if split == "ood" and self._dataset("ood") is None:
            raise ValueError(
                f"`predict_split: ood` needs an out-of-distribution split, but {type(self).__name__} has none."
            )
        return self._clean_loader(self._present(split))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Device path, on the device: training images to views (:meth:`device_augment`), clean ones normalised."""
        if self.augment_on != "device":
            return batch
        images, labels = batch
        if self.trainer is not None and self.trainer.training:
            if self._device_augment is None:
                self._device_augment = self.device_augment()
            return self._device_augment.to(images.device)(images), labels
        return self.normalize.to(images.device)(images), labels

    def setup(self, stage: str) -> None:
        """Build the OOD split at the start of a run (not at the first validation): a missing folder stops it now."""
        if stage != "predict":
            self._dataset("ood")

    def __str__(self) -> str:  # Lightning's builds every loader (reads the data) to print the split sizes
        return f"{type(self).__name__}(batch_size={self.batch_size}, n_views={self.n_views})"

    def state_dict(self) -> dict[str, Any]:
        """The seed of the orders and augmentations and the training loader's position, for an exact resume, and
        the class names (so a checkpoint says which class each index is)."""
        loader = self._train_loader.state_dict() if self._train_loader is not None else None
        return {"seed": self.seed, "train_loader": loader, "classes": list(self.classes)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning loads a loader's state only when the loader is built after the loops are restored, which
        # `trainer.estimated_stepping_batches` in `configure_optimizers` prevents; so the next loader gets it here.
        self.seed = int(state_dict.get("seed", self.seed))
        self._train_loader_state = state_dict.get("train_loader")
