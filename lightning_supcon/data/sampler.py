"""Class-balanced training batches: ``m`` samples of each of ``global_batch / m`` classes, split over the ranks.

With many classes and a per-device batch, most anchors of SupCon [0] have no positive from another sample of their
class (with 100 balanced classes and a batch of 32, about 73%): their only positives are their own views, and the
label signal is lost. The P x K sampling of metric learning [1] fixes that: every global batch holds ``m``
(``samples_per_class``) samples of each of ``P = global_batch / m`` classes, so every anchor has ``m - 1``
positives from other samples. pytorch-metric-learning's ``MPerClassSampler`` draws such batches in one process;
this one shares one global batch between the DDP ranks and resumes mid-epoch.

- Classes are drawn without replacement: the classes of an epoch's batches follow a random order of all classes,
  and a new order starts when one is used up (no class twice in a batch). Samples of a class likewise follow a
  random order of the class, renewed when used up, so every sample of a class is drawn before any repeats.
- A class with fewer than ``m`` samples is skipped (with a warning): filling its ``m`` places with repeats would put
  copies of one image in a batch as "positives from another sample", which they are not.
- Epoch length: ``floor(N / global_batch)`` global batches of the ``N`` samples of the classes kept, as a shuffled
  epoch with ``drop_last`` has. Each rank gets the slice ``[rank * batch_size, (rank + 1) * batch_size)`` of each
  global batch (whole classes on each rank when ``m`` divides ``batch_size``).
- The order is a function of ``(seed, epoch)`` only; ``set_epoch`` draws another. As an
  :class:`~lightning_supcon.data.loading.EpochSampler` it yields ``(index, augmentation seed)`` keys and resumes at a
  position, so a run preempted mid-epoch continues with the same batches (``ResumableLoader``).

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [1] Hermans et al., In Defense of the Triplet Loss for Person Re-Identification, 2017,
  https://arxiv.org/abs/1703.07737 (Sec. 2: batches of P classes x K images)
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
from pytorch_lightning.utilities import rank_zero_warn

from lightning_supcon.data.labels import LabelledDataset
from lightning_supcon.data.loading import EpochSampler

#: The training orders of a DataModule: ``"random"`` (a shuffled epoch) or ``"balanced"`` (this module).
SamplerKind = Literal["random", "balanced"]
SAMPLERS: tuple[str, ...] = get_args(SamplerKind)


class _Stream:
    """Items in random orders drawn from ``rng``, one order after another; a batch never holds an item twice."""

    def __init__(self, items: np.ndarray, rng: np.random.Generator) -> None:
        self.items, self.rng = items, rng
        self.order, self.position = rng.permutation(items), 0

    def take(self, count: int) -> np.ndarray:
        """The next ``count`` (<= the number of items) distinct items."""
        taken = self.order[self.position : self.position + count]
        self.position += len(taken)
        if len(taken) < count:  # the order is used up: a new one, the items just taken moved to its end
            fresh = self.rng.permutation(self.items)
            fresh = np.concatenate([fresh[~np.isin(fresh, taken)], fresh[np.isin(fresh, taken)]])
            self.order, self.position = fresh, count - len(taken)
            taken = np.concatenate([taken, fresh[: self.position]])
        return taken


class ClassBalancedSampler(EpochSampler):
    """Global batches of ``samples_per_class`` samples from each of ``batch_size * num_replicas / m`` classes.

    Args:
        labels: Integer class labels ``(N,)`` of the training set (samples labelled -1 are never drawn).
        seed: Seed of the orders (with the epoch) and of the per-sample augmentation seeds.
        batch_size: Samples per rank and batch.
        samples_per_class: ``m``, the samples of each class in a global batch; it must divide the global batch.
        num_replicas: Number of processes.
        rank: This process's rank.

    Raises:
        ValueError: For ``samples_per_class`` < 1 or not dividing the global batch, labels that are not
            one-dimensional, or fewer classes with ``m`` samples than a batch needs, or no whole global batch.

    Example:
        >>> labels = np.repeat(np.arange(6), 4)  # 6 classes of 4 samples
        >>> sampler = ClassBalancedSampler(labels, seed=0, batch_size=4, samples_per_class=2)
        >>> len(sampler), labels[sampler.indices()].reshape(-1, 4).tolist()  # 6 batches: 2 classes x 2 samples
        (24, [[3, 3, 2, 2], [5, 5, 4, 4], [0, 0, 1, 1], [3, 3, 0, 0], [5, 5, 4, 4], [2, 2, 1, 1]])
    """

    def __init__(
        self,
        labels: Any,
        seed: int,
        batch_size: int,
        samples_per_class: int,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        super().__init__(range(len(labels)), seed, num_replicas=num_replicas, rank=rank)
        global_batch = batch_size * num_replicas
        if samples_per_class < 1 or global_batch % samples_per_class:
            raise ValueError(
                f"Expected `samples_per_class` >= 1 dividing the global batch ({batch_size} x {num_replicas} "
                f"process(es) = {global_batch}), but got {samples_per_class}."
            )
        if labels.ndim != 1:
            raise ValueError(f"Expected class labels of shape (N,) for balanced batches, but got {labels.shape}.")
        classes, counts = np.unique(labels[labels >= 0], return_counts=True)
        kept = classes[counts >= samples_per_class]
        if len(kept) < len(classes):
            small = counts[counts < samples_per_class]
            rank_zero_warn(
                f"{len(small)} class(es) with fewer than samples_per_class={samples_per_class} samples ({small.sum()} "
                "samples) are left out of the balanced batches; lower `samples_per_class` to keep them."
            )
        self.batch_size, self.samples_per_class = batch_size, samples_per_class
        self.classes_per_batch = global_batch // samples_per_class
        known = np.flatnonzero(labels >= 0)
        by_class = known[np.argsort(labels[known], kind="stable")]  # indices grouped by class, ascending in each
        groups = np.split(by_class, np.cumsum(np.bincount(labels[known]))[:-1])  # groups[c]: the samples of class c
        self.members = {int(c): groups[c] for c in kept}
        self.num_batches = int(counts[counts >= samples_per_class].sum()) // global_batch
        if len(kept) < self.classes_per_batch or self.num_batches == 0:
            raise ValueError(
                f"A balanced global batch of {global_batch} needs {self.classes_per_batch} classes of "
                f"{samples_per_class} samples, but the training set has {len(kept)} such classes "
                f"({int(counts[counts >= samples_per_class].sum())} samples): raise `samples_per_class` or lower "
                "`batch_size`."
            )

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def global_batches(self) -> np.ndarray:
        """The epoch's global batches, sample indices ``(num_batches, batch_size * num_replicas)``, class-grouped."""
        rng = np.random.default_rng((self.seed, self.epoch))
        classes = _Stream(np.array(sorted(self.members)), rng)
        streams = {c: _Stream(members, rng) for c, members in self.members.items()}
        batches = [
            np.concatenate([streams[int(c)].take(self.samples_per_class) for c in classes.take(self.classes_per_batch)])
            for _ in range(self.num_batches)
        ]
        return np.stack(batches)

    def indices(self) -> list[int]:
        """This rank's slice of each global batch, batch after batch."""
        share = self.global_batches()[:, self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        return [int(i) for i in share.reshape(-1)]


def check_sampler(sampler: str, samples_per_class: int) -> None:
    """Raise ``ValueError`` for a ``sampler`` not in :data:`SAMPLERS` or ``samples_per_class`` < 1."""
    if sampler not in SAMPLERS or samples_per_class < 1:
        raise ValueError(
            f"Expected argument `sampler` to be one of {SAMPLERS} and `samples_per_class` >= 1, but got {sampler!r} "
            f"and {samples_per_class}."
        )


def train_sampler(
    kind: SamplerKind,
    data: LabelledDataset,
    seed: int,
    batch_size: int,
    samples_per_class: int,
    num_replicas: int,
    rank: int,
) -> EpochSampler:
    """The training order of a DataModule: a shuffled :class:`EpochSampler` (``"random"``) or a
    a
    :class:`ClassBalancedSampler` over the labels ``data`` carries (``"balanced"``)."""
    if kind == "balanced":
        return ClassBalancedSampler(data.labels, seed, batch_size, samples_per_class, num_replicas, rank)
    return EpochSampler(data, seed, num_replicas=num_replicas, rank=rank)
