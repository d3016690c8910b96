"""Data sets and a training loader that resumes mid-epoch exactly: the same order and the same augmentations.

:class:`EpochSampler` draws each epoch's order from ``(seed, epoch)`` and hands each draw its own augmentation seed,
drawn from ``(seed, epoch, position)``, the draw's position in the epoch (so a sample drawn twice in one epoch, as
the class-balanced sampler may, gets two different sets of views); :class:`MappedDataset` seeds torch's generator
with it around the transform, so the views do not depend on which worker process makes them, nor on what ran
before. :class:`ResumableLoader` counts the batches it delivered; its ``state_dict`` goes into checkpoints and, when
a run resumes mid-epoch, the loader skips what was already trained on (without loading it). The clean evaluation
loaders shard without repeats (:func:`eval_sampler`) in one fixed order (:func:`eval_order`); the loader options
every DataModule shares are checked here (:func:`check_loader_options`, :func:`check_enough_samples`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sized
from typing import Any, Literal, Protocol, get_args

import numpy as np
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from lightning_supcon.data.recipe import DEVICE_COLOURS, AugmentRecipe

AugmentOn = Literal["cpu", "device"]
AUGMENT_ON: tuple[str, ...] = get_args(AugmentOn)
#: Seed of the order of the validation and test batches: a fixed permutation of the split, so each batch holds a
#: sample of every class whatever order the source lists them in (class folders list them class by class).
EVAL_ORDER_SEED = 0
#: What :class:`EpochSampler` yields: a sample's index and the seed of its augmentation.
SampleKey = tuple[int, int]


class SampleDataset(Protocol):
    """What a subclass's data sets must be: indexable ``(image, label)`` samples with a length."""

    def __getitem__(self, index: int) -> Any: ...

    def __len__(self) -> int: ...


def initial_seed() -> int:
    """The seed of the training orders: ``seed_everything``'s (``PL_GLOBAL_SEED``), else a draw from torch."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the draw at ``position`` in ``epoch`` of a run seeded ``seed`` (NumPy's
    ``SeedSequence``).

    Example:
        >>> sample_seed(0, 1, 7) == sample_seed(0, 1, 7) != sample_seed(0, 2, 7)
        True
    """
    return int(np.random.SeedSequence((seed, epoch, position)).generate_state(1, dtype=np.uint64)[0])


def as_label(label: Any) -> int | Tensor:
    """A class label (a scalar) as an ``int``; a multi-hot label (an array of one or more 0/1 values) as int64.

    Example:
        >>> as_label(torch.tensor(3)), as_label(torch.tensor([1, 0, 1]))
        (3, tensor([1, 0, 1]))
    """
    values = torch.as_tensor(label)
    return values.long() if values.ndim else int(values)


class MappedDataset(Dataset):
    """``(transform(image), as_label(label))`` for each ``(image, label)`` sample of ``data``.

    Indexed by an ``int``, or by a :data:`SampleKey` ``(index, seed)``: then the transform runs with torch's generator
    seeded with ``seed``, and the generator's state outside is left as it was.
    """

    def __init__(self, data: SampleDataset, transform: Callable[[Any], Tensor]) -> None:
        self.data = data
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: int | SampleKey) -> tuple[Tensor, int | Tensor]:
        if isinstance(key, int):
            image, label = self.data[key]
            return self.transform(image), as_label(label)
        index, seed = key
        image, label = self.data[index]
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only (what fork_rng restores): torch.manual_seed also queues a seed for every CUDA
            # device, capturing a stack trace each call, which made this line most of the demo's loading time.
            torch.random.default_generator.manual_seed(seed)
            return self.transform(image), as_label(label)


class EpochSampler(DistributedSampler):
    """Training order: a permutation drawn from ``(seed, epoch)``, this rank's share, resumable at a position.

    It is torch's ``DistributedSampler`` (so Lightning keeps it under DDP instead of wrapping it) with the shuffle
    always on; it yields :data:`SampleKey` pairs ``(index, sample_seed(seed, epoch, position))``, ``position`` the
    draw's place in the epoch over all ranks (``local position * num_replicas + rank``), distinct for every draw.

    Args:
        data: The data set (only its length is used).
        seed: Seed of the orders and of the per-sample augmentation seeds.
        num_replicas: Number of processes.
        rank: This process's rank.

    Example:
        >>> sampler = EpochSampler(range(6), seed=3)
        >>> order = [index for index, _ in sampler]
        >>> sorted(order), order == [index for index, _ in sampler]
        ([0, 1, 2, 3, 4, 5], True)
        >>> sampler.resume(epoch=0, position=4)
        >>> [index for index, _ in sampler] == order[4:], [index for index, _ in sampler] == order
        (True, True)
    """

    def __init__(self, data: Any, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(data, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self._resume: tuple[int, int] | None = None

    def resume(self, epoch: int, position: int) -> None:
        """Make the next iteration of ``epoch`` start at ``position`` (a later epoch starts at 0)."""
        self._resume = (epoch, position)

    def start(self) -> int:
        """Where the next iteration starts: the resume position if it is of the current epoch, else 0."""
        return self._resume[1] if self._resume is not None and self._resume[0] == self.epoch else 0

    def indices(self) -> list[int]:
        """This rank's sample indices of the current epoch, in order (a subclass may draw another order)."""
        return list(super().__iter__())

    def __iter__(self) -> Iterator[SampleKey]:  # type: ignore[override]
        start, self._resume = self.start(), None  # a resume applies once
        for position, index in enumerate(self.indices()[start:], start):
            yield index, sample_seed(self.seed, self.epoch, position * self.num_replicas + self.rank)


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over an :class:`EpochSampler` whose position in the epoch can be saved and restored.

    ``state_dict()`` is ``{"epoch", "batches"}``: the epoch being drawn and how many of its batches this loader has
    delivered; after ``load_state_dict`` the next iteration of that epoch delivers the rest (a later epoch is whole).
    Lightning saves this state in checkpoints (``FitLoop.on_save_checkpoint``) and sees the loader as resumable (no
    warning about mid-epoch checkpoints); :class:`~lightning_supcon.data.base.MultiViewDataModule` keeps it in its
    own state too and hands it to the next loader it builds, because Lightning loads it only into a loader built
    after the loops are restored. A resumed worker process draws the same augmentations: they are seeded per sample.
    """

    sampler: EpochSampler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, EpochSampler):
            raise TypeError(f"Expected an EpochSampler, but got {type(self.sampler).__name__}.")
        self._epoch = 0
        self._batches = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        assert self.batch_size is not None
        self._epoch = self.sampler.epoch
        self._batches = self.sampler.start() // self.batch_size
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._batches}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        assert self.batch_size is not None
        self._epoch, self._batches = int(state_dict["epoch"]), int(state_dict["batches"])
        self.sampler.resume(self._epoch, self._batches * self.batch_size)


def eval_sampler(data: Sized, trainer: Any, may_be_empty: bool = False) -> Sampler[int] | None:
    """The sampler of a clean evaluation loader: under DDP each sample on exactly one rank, in order.

    Lightning's default distributed sampler repeats up to ``world_size - 1`` samples to even out the shards, and the
    metrics would count them twice; with ``UnrepeatedDistributedSampler`` ranks may run one batch fewer, so no
    collective may run in evaluation steps. That sampler refuses a rank without a sample (an ``AssertionError``:
    in Lightning's loops a rank without a batch could leave DDP's forward waiting); ``may_be_empty`` is for a loader
    the model reads itself, outside those loops (the OOD split, which may be smaller than the world):
    :class:`UnrepeatedShard`. ``None`` (a plain in-order loader) for one process or no trainer.
    """
    if trainer is None or trainer.world_size <= 1:
        return None
    if may_be_empty:
        return UnrepeatedShard(data, num_replicas=trainer.world_size, rank=trainer.global_rank)
    return UnrepeatedDistributedSampler(data, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False)


class UnrepeatedShard(DistributedSampler):
    """Rank ``r`` of ``W`` takes samples ``r, r + W, r + 2W, ...`` in order, every sample once, a rank possibly none:
    Lightning's ``UnrepeatedDistributedSampler`` without its refusal of an empty shard (ours, as neither PyTorch's
    sampler, which repeats samples, nor Lightning's allows it). A ``DistributedSampler``, so Lightning keeps it.

    Example:
        >>> [list(UnrepeatedShard(range(3), num_replicas=4, rank=r)) for r in range(4)]
        [[0], [1], [2], []]
    """

    def __init__(self, data: Sized, num_replicas: int, rank: int) -> None:
        super().__init__(data, num_replicas=num_replicas, rank=rank, shuffle=False)  # type: ignore[arg-type]
        self.total_size = len(data)
        self.num_samples = len(range(rank, self.total_size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))


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
        >>> from lightning_supcon.data.recipe import SIMCLR
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
