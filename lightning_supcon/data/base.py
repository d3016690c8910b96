"""``MultiViewDataModule``: the base to subclass for a new data set.

A subclass names its data (``num_classes``, ``in_channels``, ``image_size``, ``mean``, ``std``) and returns its
splits as :class:`~lightning_supcon.data.labels.LabelledDataset` s: raw ``(image, label)`` samples, the image a PIL
image or a uint8 ``(C, H, W)`` tensor, that carry their labels aligned with them; the base makes the
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
    ...     def _split(self, name: str) -> LabelledDataset:
    ...         data = np.load(self.path)
    ...         images = torch.from_numpy(data[f"{name}_images"]).permute(0, 3, 1, 2)  # (N, 3, 32, 32) uint8
    ...         return LabelledDataset(images, data[f"{name}_labels"])
    ...
    ...     def train_dataset(self) -> LabelledDataset:
    ...         return self._split("train")
    ...
    ...     def val_dataset(self) -> LabelledDataset:
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
    >>> images.shape, dm.classes
    (torch.Size([8, 3, 32, 32]), ['0', '1', '2', '3'])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from lightning_supcon.data.device_augment import DeviceMultiViewAugment
from lightning_supcon.data.labels import LabelledDataset
from lightning_supcon.data.loading import EpochSampler, MappedDataset, ResumableLoader, eval_sampler, initial_seed
from lightning_supcon.data.normalize import ToNormalizedFloat
from lightning_supcon.data.recipe import DEVICE_COLOURS, SIMCLR, AugmentRecipe
from lightning_supcon.data.sampler import SamplerKind, check_sampler, train_sampler
from lightning_supcon.data.subsets import Unlabelled, check_label_fraction, label_subset
from lightning_supcon.data.transforms import MultiViewTransform, decode_steps, supcon_transform

AugmentOn = Literal["cpu", "device"]
AUGMENT_ON: tuple[str, ...] = get_args(AugmentOn)
#: The clean split ``lightning-supcon predict`` embeds, in data-set order (see
#: :class:`~lightning_supcon.callbacks.EmbeddingWriter`): the training set is the kNN bank of an offline evaluation.
PredictSplit = Literal["train", "val", "test"]
PREDICT_SPLITS: tuple[str, ...] = get_args(PredictSplit)
Split = Literal["train", "val", "test"]
#: Seed of the order of the validation and test batches: a fixed permutation of the split, so each batch holds a
#: sample of every class whatever order the source lists them in (class folders list them class by class).
EVAL_ORDER_SEED = 0


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

    Subclasses set ``num_classes``, ``in_channels``, ``image_size``, ``mean`` and ``std`` (class attributes or in
    ``__init__``), implement ``train_dataset()`` and ``val_dataset()`` and may implement ``test_dataset()``
    (default ``None``: ``test`` reports the validation set, with a warning), each returning a
    :class:`~lightning_supcon.data.labels.LabelledDataset` whose ``labels`` are those of its samples; a source with
    class names overrides :attr:`classes`. A data set with its own recipe declares
    ``augment: AugmentRecipe = ITS_RECIPE`` in its ``__init__`` (``--help`` shows it); one whose images need
    resizing first overrides the one hook :meth:`decode_transform`. Both backends are built from ``augment``.
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
        predict_split: The clean split ``predict`` embeds, ``"train"``, ``"val"`` or ``"test"`` (ValueError else).
        label_fraction: Train (and build the kNN bank) on this class-stratified fraction of the training labels
            (:func:`~lightning_supcon.data.subsets.label_subset`); 1: all. ``subset_seed``: its seed. ``unlabelled``:
            ``"drop"`` the other samples, or keep them as ``"unknown"`` (label -1: semi-supervised SupCon).
        sampler: ``"random"``, or ``"balanced"``: ``samples_per_class`` samples of each of ``global batch /
            samples_per_class`` classes per global batch (:class:`~lightning_supcon.data.sampler.ClassBalancedSampler`).

    Raises:
        ValueError: For bad loader options (:func:`check_loader_options`), a bad ``label_fraction``, ``sampler`` or
            ``samples_per_class``.
        TypeError: On first use, for a split that is not a ``LabelledDataset``.
    """

    num_classes: int
    in_channels: int = 3
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

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
        predict_split: PredictSplit = "test",
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

    def train_dataset(self) -> LabelledDataset:
        """The training set of raw ``(PIL image or uint8 (C, H, W) tensor, int label)`` samples, labels carried."""
        raise NotImplementedError(f"{type(self).__name__} must implement `train_dataset()`.")

    def val_dataset(self) -> LabelledDataset:
        """The validation set of raw samples."""
        raise NotImplementedError(f"{type(self).__name__} must implement `val_dataset()`.")

    def test_dataset(self) -> LabelledDataset | None:
        """The test set of raw samples; ``None`` (the default): there is none, ``test`` reports the validation set."""
        return None

    @property
    def classes(self) -> list[str]:
        """The class names, a class index's name at its position: ``"0" .. str(num_classes - 1)`` unless the source
        names them. Saved in the DataModule's state (hence in checkpoints) and shown wherever a class is shown."""
        return [str(i) for i in range(self.num_classes)]

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
        """The one cache of the splits: each built once, checked, and the training set cut to ``label_fraction``."""
        if split not in self._datasets:
            make = {"train": self.train_dataset, "val": self.val_dataset, "test": self.test_dataset}[split]
            data = make()
            if data is not None and not isinstance(data, LabelledDataset):
                raise TypeError(
                    f"Expected `{type(self).__name__}.{split}_dataset()` to return a LabelledDataset(images, labels) "
                    f"(samples that carry their labels), but got {type(data).__name__}."
                )
            if split == "train":
                assert data is not None
                data = label_subset(data, self.label_fraction, self.subset_seed, self.unlabelled)
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

    def _clean_loader(self, data: LabelledDataset, permuted: bool = False) -> DataLoader:
        if permuted:
            data = data.subset(eval_order(len(data)))
        sampler = eval_sampler(data, self.trainer)
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

    def predict_dataloader(self) -> DataLoader:
        """Clean batches of ``predict_split``, in data-set order (the validation set for ``"test"`` when there is no
        test set)."""
        split: Split = self.predict_split
        if split == "test" and self._dataset("test") is None:
            split = "val"
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


def eval_order(num_samples: int) -> np.ndarray:
    """The order of the validation and test batches: one fixed permutation of ``range(num_samples)``, seeded by
    :data:`EVAL_ORDER_SEED`, so every source, run and process evaluates a split in the same class-mixed order.

    Example:
        >>> sorted(eval_order(5).tolist()), eval_order(5).tolist() == eval_order(5).tolist()
        ([0, 1, 2, 3, 4], True)
    """
    return np.random.default_rng(EVAL_ORDER_SEED).permutation(num_samples)


def check_loader_options(
    batch_size: int,
    n_views: int,
    eval_batch_size: int | None,
    num_workers: int,
    augment_on: str,
    augment: AugmentRecipe,
) -> None:
    """Raise for loader options no DataModule can use.

    Raises:
        ValueError: For ``batch_size``, ``n_views`` or ``eval_batch_size`` < 1, ``num_workers`` < 0, an unknown
            ``augment_on``, or an ``augment.colour`` the device backend (kornia) lacks with ``augment_on="device"``.

    Example:
        >>> check_loader_options(batch_size=0, n_views=2, eval_batch_size=None, num_workers=0, augment_on="cpu",
        ...                      augment=SIMCLR)
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `batch_size` to be >= 1, but got 0.
    """
    for name, value in (("batch_size", batch_size), ("n_views", n_views), ("eval_batch_size", eval_batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"Expected argument `{name}` to be >= 1, but got {value}.")
    if num_workers < 0:
        raise ValueError(f"Expected argument `num_workers` to be >= 0, but got {num_workers}.")
    if augment_on not in AUGMENT_ON:
        raise ValueError(f"Expected argument `augment_on` to be one of {AUGMENT_ON}, but got {augment_on!r}.")
    if augment_on == "device" and augment.colour not in DEVICE_COLOURS:
        raise ValueError(
            f"Expected `augment.colour` to be one of {DEVICE_COLOURS} with `augment_on='device'`, but got "
            f"{augment.colour!r}."
        )


def check_enough_samples(num_samples: int, world_size: int, batch_size: int, drop_last: bool) -> None:
    """Raise ``ValueError`` when ``drop_last`` would leave a process without a single training batch."""
    if drop_last and -(-num_samples // world_size) < batch_size:
        raise ValueError(
            f"Expected at least `batch_size` ({batch_size}) training samples per process with `drop_last=True`, "
            f"but the training set has {num_samples} for {world_size} process(es): lower `batch_size` or set "
            "`drop_last=False`."
        )


def check_predict_split(split: str) -> PredictSplit:
    """``split`` if it is one of :data:`PREDICT_SPLITS`, else a ``ValueError`` naming it and the allowed ones.

    Example:
        >>> check_predict_split("train")
        'train'
    """
    if split not in PREDICT_SPLITS:
        raise ValueError(f"Expected argument `predict_split` to be one of {PREDICT_SPLITS}, but got {split!r}.")
    return split  # type: ignore[return-value]
