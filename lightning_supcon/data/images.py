"""``ImageDataModule``: the base of the DataModules that need no code (class folders, CSV lists, HF tables).

A subclass says only where a split's images and raw labels are (:meth:`ImageDataModule.source`); the rest is here
and is the same for every source: images decoded by :func:`~lightning_supcon.data.decode.load_image` as grayscale
(``channels=1``) or RGB (``channels=3``), upright by their EXIF orientation, 16-bit data scaled to 8 bits;
resized (shorter side to ``resize``) and centre-cropped to ``image_size``; classes from the training labels
(:mod:`~lightning_supcon.data.labels`); a seeded, stratified validation split when the source has none; the
normalisation given, ImageNet's, or ``"auto"``: measured once on a seeded sample of training images and printed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

import numpy as np
import torch
from PIL import Image
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor
from torchvision.transforms import v2

from lightning_supcon.data.base import MultiViewDataModule, Split
from lightning_supcon.data.decode import UnreadableImage, UnscaledImage, load_image
from lightning_supcon.data.labels import (
    LabelledDataset,
    RawLabel,
    Selection,
    class_names,
    encode_labels,
    stratified_split,
)
from lightning_supcon.data.normalize import channel_statistics, check_statistics
from lightning_supcon.data.recipe import AugmentRecipe
from lightning_supcon.data.transforms import IMAGENET_MEAN, IMAGENET_STD, crop_larger_than_resize, decode_steps

#: SupCon's ImageNet recipe [0]: crop scale (0.08, 1), flip, SimCLR's colour steps and Gaussian blur [1].
IMAGENET_RECIPE = AugmentRecipe(scale=(0.08, 1.0), blur_p=0.5)
Channels = Literal[1, 3]
CHANNELS: tuple[int, ...] = get_args(Channels)
#: Training images sampled (seeded by ``split_seed``) to measure ``mean``/``std`` when they are ``"auto"``.
AUTO_SAMPLE = 500
_MODES = {1: "L", 3: "RGB"}


class ImageSource(Protocol):
    """A split's images by index: each what :func:`~lightning_supcon.data.decode.load_image` takes (a file path,
    encoded bytes, a PIL image)."""

    def __getitem__(self, index: int) -> str | bytes | Image.Image | dict[str, Any]: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class LabelledImages:
    """One split as a source gives it: its images, their raw labels (names or class indices) and where it is."""

    images: ImageSource
    labels: Sequence[RawLabel]
    where: str


def is_readable(path: str) -> bool:
    """Whether PIL recognises the file and its structure checks pass (cheap: no full decode)."""
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:  # PIL raises many types here; any of them means "corrupt"
        return False


def readable_only(found: LabelledImages) -> LabelledImages:
    """``found`` without the files PIL cannot read (:func:`is_readable`), with one warning giving their number.

    Raises:
        ValueError: If no file is readable.
    """
    readable = [is_readable(str(found.images[i])) for i in range(len(found.images))]
    keep = [i for i, ok in enumerate(readable) if ok]
    bad = [str(found.images[i]) for i, ok in enumerate(readable) if not ok]
    if bad:
        rank_zero_warn(f"Skipped {len(bad)} unreadable image(s) in {found.where!r}, e.g. {bad[0]!r}.")
    if not keep:
        raise ValueError(f"Expected readable images in {found.where!r}, but all {len(bad)} are unreadable.")
    return LabelledImages([str(found.images[i]) for i in keep], [found.labels[i] for i in keep], found.where)


class ImageDataset(LabelledDataset):
    """``(PIL image in mode, class index)`` samples of ``images`` (paths or PIL images) at ``indices`` (``None``: all),
    each carrying its own label: ``labels[indices[i]]``; decoded by :func:`~lightning_supcon.data.decode.load_image`.
    ``unreadable_hint`` ends the message of an image that cannot be read (the fix the source offers, e.g. its
    ``skip_corrupt``)."""

    def __init__(
        self,
        images: ImageSource,
        labels: Sequence[int],
        mode: str = "RGB",
        indices: Sequence[int] | None = None,
        unreadable_hint: str = "",
    ) -> None:
        self.indices = list(range(len(labels))) if indices is None else [int(i) for i in indices]
        self.mode = mode
        self.unreadable_hint = unreadable_hint
        at = np.asarray(self.indices, dtype=np.int64)
        super().__init__(Selection(images, at), np.asarray(labels, dtype=np.int64)[at], self.decode)

    def decode(self, image: Any) -> Image.Image:
        """The image in :attr:`mode`; an unreadable one raises :class:`UnreadableImage` naming the fix."""
        try:
            return load_image(image, self.mode)
        except UnreadableImage as error:
            if not self.unreadable_hint or isinstance(
                error, UnscaledImage
            ):  # PIL opens it: skip_corrupt would not help
                raise
            raise UnreadableImage(f"{str(error).rstrip('.')}; {self.unreadable_hint}") from None


class ImageDataModule(MultiViewDataModule):
    """Image data sets with no code: a subclass implements :meth:`source` only.

    Args:
        image_size: Side of the square training views and evaluation crops.
        resize: The shorter side is resized to this, then the centre ``image_size`` square is taken (evaluation;
            the device path's training crops are drawn from the centre ``resize`` square); ``None``:
            ``round(image_size / 0.875)``, ImageNet's 256 for 224. ``resize = image_size`` keeps the whole image.
        channels: ``1`` decodes grayscale (1 channel), ``3`` RGB; linked into the model's ``in_channels``. With 1
            channel the recipe's colour jitter and grayscale steps are skipped (they need RGB).
        mean: Per-channel mean (``channels`` values), ``"auto"``, or ``None``: ImageNet's for RGB (what pretrained
            backbones expect), ``"auto"`` for grayscale. ``"auto"`` measures it on :data:`AUTO_SAMPLE` training
            images drawn with ``split_seed`` (the same on every process) and prints it once, to pin.
        std: Per-channel standard deviation, likewise.
        val_fraction: Fraction of the training samples held out for validation (stratified by class, seeded by
            ``split_seed``) when the source has no validation split.
        split_seed: Seed of that split and of the ``"auto"`` sample.
        augment: The augmentation recipe; default :data:`IMAGENET_RECIPE`.
        **kwargs: The arguments of :class:`~lightning_supcon.data.base.MultiViewDataModule`.

    Raises:
        ValueError: For a ``channels`` other than 1 or 3, a ``mean``/``std`` of another length, a ``std`` that is
            not positive (naming the channel), an ``image_size`` or ``resize`` < 1, a ``resize`` < ``image_size``
            (the evaluation crop would be padded with zeros), or ``val_fraction`` outside ``(0, 1)``; on first use,
            for labels that are not training classes.
    """

    def __init__(
        self,
        image_size: int = 224,
        resize: int | None = None,
        channels: Channels = 3,
        mean: tuple[float, ...] | Literal["auto"] | None = None,
        std: tuple[float, ...] | Literal["auto"] | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        augment: AugmentRecipe = IMAGENET_RECIPE,
        **kwargs: Any,
    ) -> None:
        super().__init__(augment=augment, **kwargs)
        if channels not in CHANNELS:
            raise ValueError(f"Expected argument `channels` to be one of {CHANNELS}, but got {channels}.")
        for name, value in (("image_size", image_size), ("resize", resize)):
            if value is not None and value < 1:
                raise ValueError(f"Expected argument `{name}` to be >= 1, but got {value}.")
        if resize is not None and resize < image_size:
            raise ValueError(crop_larger_than_resize(image_size, resize))
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"Expected argument `val_fraction` to be in (0, 1), but got {val_fraction}.")
        requested = {
            "mean": _statistic("mean", mean, IMAGENET_MEAN, channels),
            "std": _statistic("std", std, IMAGENET_STD, channels),
        }
        for key, given in requested.items():
            if not isinstance(given, str):
                setattr(self, key, given)
        #: The statistics still to measure (``"auto"``), on first use.
        self._auto = [key for key, given in requested.items() if isinstance(given, str)]
        self.image_size = image_size
        self.resize = round(image_size / 0.875) if resize is None else resize
        self.channels = channels
        self.in_channels = channels
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self._classes: list[str] | None = None
        self._found: dict[str, LabelledImages | None] = {}

    # ---- what a subclass provides -------------------------------------------------------------------------
    def source(self, split: Split) -> LabelledImages | None:
        """The images and raw labels of ``split`` (``"train"``, ``"val"``, ``"test"`` or ``"ood"``); ``None`` when
        the source has no such split (``"val"``: a seeded split of the training set; ``"test"``: the validation set;
        ``"ood"``: no out-of-distribution metrics). The labels of ``"ood"`` are not read."""
        raise NotImplementedError(f"{type(self).__name__} must implement `source(split)`.")

    def class_names(self, labels: Sequence[RawLabel]) -> list[str]:
        """The classes of the training labels (:func:`~lightning_supcon.data.labels.class_names`); a source that
        knows its class names (a ``ClassLabel`` column) returns those."""
        return class_names(labels)

    # ---- classes and splits --------------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        """The class names; a label's class index is its position here."""
        if self._classes is None:
            train = self._train_source()
            self._classes = self.class_names(train.labels)
        return self._classes

    def _source(self, split: Split) -> LabelledImages | None:
        if split not in self._found:
            self._found[split] = self.source(split)
        return self._found[split]

    def _train_source(self) -> LabelledImages:
        found = self._source("train")
        if found is None:
            raise ValueError(f"{type(self).__name__} has no training split.")
        return found

    def dataset(self, split: Split) -> ImageDataset | None:
        """``split`` built from its source, or, for ``"train"`` and a held-out ``"val"``, from the training source
        and its seeded stratified split (a function of the labels and ``split_seed``: both halves agree without a
        cache; the base class caches the data sets, :meth:`_source` the sources). The ``"ood"`` samples are of no
        class: their labels are -1 whatever the source says."""
        mode = _MODES[self.channels]
        if split == "ood":
            found = self._source(split)
            if found is None:
                return None
            return ImageDataset(found.images, [-1] * len(found.images), mode, None, self.unreadable_hint)
        if split == "test" or (split == "val" and self._source("val") is not None):
            found = self._source(split)
            return None if found is None else self._dataset_of(found, mode)
        train = self._train_source()
        targets = encode_labels(train.labels, self.classes, train.where)
        if self._source("val") is not None:
            return ImageDataset(train.images, targets, mode, unreadable_hint=self.unreadable_hint)
        kept, held_out = stratified_split(targets, self.val_fraction, self.split_seed)
        held = kept if split == "train" else held_out
        return ImageDataset(train.images, targets, mode, held, self.unreadable_hint)

    def _dataset_of(self, found: LabelledImages, mode: str) -> ImageDataset:
        labels = encode_labels(found.labels, self.classes, found.where)
        return ImageDataset(found.images, labels, mode, unreadable_hint=self.unreadable_hint)

    @property
    def unreadable_hint(self) -> str:
        """The fix that the message of an unreadable image names: a source's ``skip_corrupt`` when it is off."""
        if getattr(self, "skip_corrupt", None) is False:
            return "--data.skip_corrupt true (skip_corrupt=True) leaves out the files PIL cannot open"
        return ""

    # ---- decoding and normalisation ------------------------------------------------------------------------
    def decode_transform(self, train: bool) -> Callable[[Any], Tensor]:
        """Resize the shorter side to ``resize`` and crop the centre: that square for training, ``image_size``
        else; uint8 ``(channels, side, side)``."""
        return v2.Compose(decode_steps(self.resize if train else self.image_size, resize=self.resize))

    def _statistic(self, name: str) -> tuple[float, ...]:
        """``mean`` or ``std``, measured on first use (both at once) when ``"auto"``, and printed once to pin."""
        if self._auto:
            measured = dict(zip(("mean", "std"), self.measure_statistics(), strict=True))
            for key in self._auto:
                setattr(self, key, measured[key])
            self._auto = []
            _print(
                f"Normalisation measured on {min(AUTO_SAMPLE, len(self._train_images()))} training images "
                f"(split_seed {self.split_seed}): pin it with --data.init_args.mean {_flag(self.mean)} "
                f"--data.init_args.std {_flag(self.std)}"
            )
        return super()._statistic(name)

    def _train_images(self) -> ImageDataset:
        data = self.dataset("train")
        assert data is not None
        return data

    def measure_statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel ``(mean, std)`` of the clean evaluation views of up to :data:`AUTO_SAMPLE` training images,
        drawn without replacement with ``split_seed``: a function of the data and the seed only, hence the same on
        every DDP process (:func:`~lightning_supcon.data.normalize.channel_statistics`)."""
        data = self._train_images()
        rng = np.random.default_rng(self.split_seed)
        picked = np.sort(rng.choice(len(data), size=min(AUTO_SAMPLE, len(data)), replace=False))
        decode = self.decode_transform(train=False)
        images = torch.stack([decode(data[int(i)][0]) for i in picked])  # (n, C, image_size, image_size) uint8
        return channel_statistics(images)


def _statistic(
    name: str, value: tuple[float, ...] | str | None, imagenet: tuple[float, ...], channels: int
) -> tuple[float, ...] | str:
    """A checked ``mean`` or ``std`` argument: ``"auto"`` or ``channels`` floats; ``None`` -> ImageNet's or auto."""
    if value is None:
        return imagenet if channels == 3 else "auto"
    if value == "auto":
        return value
    if isinstance(value, str) or len(value) != channels:
        raise ValueError(f"Expected `{name}` to be 'auto' or {channels} value(s), one per channel, but got {value!r}.")
    values = tuple(float(v) for v in value)
    ones = (1.0,) * channels
    check_statistics(*((values, ones) if name == "mean" else (ones, values)))
    return values


@rank_zero_only
def _print(line: str) -> None:
    print(line, flush=True)


def _flag(values: tuple[float, ...]) -> str:
    return "[" + ",".join(f"{v:g}" for v in values) + "]"
