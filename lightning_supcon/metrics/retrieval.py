"""Leave-one-out retrieval metrics of an embedding: Precision@1, R-Precision and MAP@R.

- [0] Musgrave et al., A Metric Learning Reality Check, ECCV 2020, https://arxiv.org/abs/2003.08505 (Sec. 3.2)

Every sample queries all the others, ranked by cosine similarity. For a query of class ``c``, ``R`` is the number
of *other* samples of class ``c``, ``rel(i)`` is 1 when the ``i``-th ranked sample has class ``c`` and
``P(i)`` is the fraction of relevant samples among the first ``i``:

- Precision@1 = ``rel(1)``;
- R-Precision = ``P(R)``;
- MAP@R = ``(1 / R) * sum_{i=1..R} P(i) * rel(i)``.

Each is averaged over the queries. Two conventions, the same as pytorch-metric-learning's ``AccuracyCalculator``:

- queries with ``R = 0`` (the only sample of their class) are left out of all three averages; when every query
  has ``R = 0`` the metrics are NaN;
- ties in similarity are broken by position in the embedding set, lower index first (deterministic; the order
  of exact ties in other libraries is unspecified, so results can differ only when similarities tie exactly).

Multi-hot labels ``(N, L)`` are accepted: each distinct label set is one class (relevant = exactly the same labels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

from lightning_supcon.utils.checks import check_positive_integers
from lightning_supcon.utils.numerics import compute_dtype

METRIC_NAMES = ("precision_at_1", "r_precision", "map_at_r")


def _top_ranked(sim: Tensor, depth: int) -> Tensor:
    """Column indices of the ``depth`` largest entries of each row of ``sim``, ties by lower index first.

    ``topk`` (several times faster than a full sort) picks the candidates; sorting them by index then stably by
    value orders ties by index. Rows where ``topk`` had to choose among entries tying at the cut fall back to a
    full stable sort, so the result is exactly that of a stable descending sort.
    """
    candidates = sim.topk(depth, dim=1).indices.sort(dim=1).values  # (C, depth) ascending index
    values = sim.gather(1, candidates)
    ranked = candidates.gather(1, values.argsort(dim=1, descending=True, stable=True))
    cut = values.min(dim=1, keepdim=True).values  # (C, 1)
    ambiguous = (sim == cut).sum(dim=1) > (values == cut).sum(dim=1)
    if ambiguous.any():
        ranked[ambiguous] = sim[ambiguous].argsort(dim=1, descending=True, stable=True)[:, :depth]
    return ranked


def retrieval_metrics(embeddings: Tensor, labels: Tensor, chunk_size: int = 1024) -> dict[str, Tensor]:
    """Precision@1, R-Precision and MAP@R of [0], every sample querying all others by cosine similarity.

    Embeddings are L2-normalised here, and compared in at least float32 (float64 stays float64). Queries are
    processed ``chunk_size`` at a time, holding a ``chunk_size x N`` similarity block; only the ``R`` best of each
    row are ranked.

    Args:
        embeddings: ``(N, D)`` features.
        labels: ``(N,)`` integer class labels (any values), or ``(N, L)`` multi-hot labels (a set is a class).
        chunk_size: Queries per block.

    Returns:
        ``{"precision_at_1", "r_precision", "map_at_r"}``: float32 scalars, means over the queries whose class has
        another sample (NaN if there is none).

    Raises:
        ValueError: For bad shapes or ``chunk_size``.

    Example:
        >>> import torch
        >>> embeddings = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.6, 0.4], [0.0, 1.0], [0.1, 0.9]])
        >>> labels = torch.tensor([0, 0, 0, 0, 1])  # sample 4 is alone in its class: not a query
        >>> {name: round(value.item(), 4) for name, value in retrieval_metrics(embeddings, labels).items()}
        {'precision_at_1': 0.75, 'r_precision': 0.6667, 'map_at_r': 0.5972}
    """
    check_positive_integers(chunk_size=chunk_size)
    if embeddings.ndim != 2 or labels.ndim not in (1, 2) or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"Expected `embeddings` (N, D) and `labels` (N,) or (N, L), but got {tuple(embeddings.shape)} and "
            f"{tuple(labels.shape)}"
        )
    num = embeddings.shape[0]
    embeddings = F.normalize(embeddings.to(compute_dtype(embeddings.dtype)), dim=1)  # float64 stays float64
    _, class_index, class_counts = torch.unique(labels, dim=0, return_inverse=True, return_counts=True)
    num_relevant = class_counts[class_index] - 1  # (N,) R of every query
    sums = torch.zeros(len(METRIC_NAMES), dtype=torch.float64, device=embeddings.device)
    for start in range(0, num, chunk_size):
        stop = min(start + chunk_size, num)
        rows = torch.arange(start, stop, device=embeddings.device)
        r = num_relevant[start:stop]  # (C,)
        keep = r > 0
        if not keep.any():
            continue
        rows, r = rows[keep], r[keep]
        sim = embeddings[rows] @ embeddings.T  # (C, N)
        sim[torch.arange(len(rows), device=sim.device), rows] = -torch.inf  # a query does not retrieve itself
        depth = int(r.max())
        ranked = _top_ranked(sim, depth)  # (C, R_max)
        rel = class_index[ranked] == class_index[rows, None]  # (C, R_max) rel(i)
        ranks = torch.arange(1, depth + 1, device=sim.device)
        within_r = ranks <= r[:, None]  # (C, R_max) i <= R
        rel = rel & within_r
        hits = rel.cumsum(dim=1)  # (C, R_max) number of relevant among the first i
        precision_at_i = hits.double() / ranks
        sums[0] += rel[:, 0].double().sum()
        sums[1] += (hits[:, -1].double() / r).sum()  # rel is zeroed past R, so hits[:, -1] = hits at R
        sums[2] += ((precision_at_i * rel).sum(dim=1) / r).sum()
    valid = int((num_relevant > 0).sum())
    means = (sums / valid) if valid > 0 else torch.full_like(sums, float("nan"))
    return {name: means[i].float() for i, name in enumerate(METRIC_NAMES)}


class RetrievalMetrics(Metric):
    """Precision@1, R-Precision and MAP@R of [0] over all embeddings seen by ``update``.

    The embeddings and labels are concatenated across processes in ``compute``, so under DDP the metrics are those
    of the global set. A rank that saw no sample still joins the gathers, sending rows of the shape and dtype the
    others send (torchmetrics' own sync would send a 1-D float placeholder, which does not match ``(N, D)``), so
    **every rank must call** ``compute`` (and :meth:`has_data`). See ``retrieval_metrics`` for the conventions.

    Args:
        chunk_size: Queries per block in ``compute``.
        **kwargs: Passed to ``torchmetrics.Metric``; ``sync_on_compute=False`` computes on this rank's samples only,
            ``dist_sync_fn`` and ``process_group`` are used for the gathers of ``compute``.

    Raises:
        ValueError: For a bad ``chunk_size``; in ``compute``, when no rank saw a sample.

    Example:
        >>> import torch
        >>> metric = RetrievalMetrics()
        >>> metric.update(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 0, 0]))
        >>> metric.update(torch.tensor([[0.0, 1.0], [0.1, 0.9]]), torch.tensor([0, 1]))
        >>> metric.compute()["map_at_r"]
        tensor(0.5972)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    embeddings: list[Tensor]
    labels: list[Tensor]

    def __init__(self, chunk_size: int = 1024, **kwargs: Any) -> None:
        merge_ranks = kwargs.pop("sync_on_compute", True)
        super().__init__(sync_on_compute=False, **kwargs)  # compute gathers itself (see the class docstring)
        if not isinstance(merge_ranks, bool):
            raise ValueError(f"Expected keyword argument `sync_on_compute` to be a `bool` but got {merge_ranks}")
        check_positive_integers(chunk_size=chunk_size)
        self.chunk_size = chunk_size
        self.merge_ranks = merge_ranks
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, embeddings: Tensor, labels: Tensor) -> None:
        """Store ``embeddings`` ``(B, D)`` and their integer ``labels`` ``(B,)`` or multi-hot labels ``(B, L)``."""
        if embeddings.ndim != 2 or labels.ndim not in (1, 2) or labels.shape[0] != embeddings.shape[0]:
            raise ValueError(
                f"Expected `embeddings` (B, D) and `labels` (B,) or (B, L), but got {tuple(embeddings.shape)} and "
                f"{tuple(labels.shape)}"
            )
        self.embeddings.append(embeddings.detach())
        self.labels.append(labels.detach())

    def _gather(self) -> Callable[[Tensor], list[Tensor]] | None:
        """The all-gather of ``compute`` (one tensor per rank, in rank order), or ``None`` in one process."""
        if not (self.merge_ranks and self.distributed_available_fn()):
            return None
        sync: Callable[..., list[Tensor]] = self.dist_sync_fn or gather_all_tensors
        return lambda tensor: sync(tensor, group=self.process_group)

    def _stats(self, gather: Callable[[Tensor], list[Tensor]] | None) -> Tensor:
        """``(W, 4)``: per rank ``[rows, D, label width (-1: class labels, -2: none seen), float64 embeddings]``."""
        rows = sum(e.shape[0] for e in self.embeddings)
        dim = self.embeddings[0].shape[1] if self.embeddings else 0
        width = (self.labels[0].shape[1] if self.labels[0].ndim == 2 else -1) if self.labels else -2
        wide = int(any(e.dtype == torch.float64 for e in self.embeddings))
        local = torch.tensor([rows, dim, width, wide], dtype=torch.long, device=self.device)
        return torch.stack(gather(local)) if gather else local[None]

    def has_data(self) -> bool:
        """Whether some rank saw a sample (the same answer on every rank: under DDP every rank must call it)."""
        return bool(self._stats(self._gather())[:, 0].sum() > 0)

    def compute(self) -> dict[str, Tensor]:
        """``{"precision_at_1", "r_precision", "map_at_r"}`` over everything seen by every rank."""
        gather = self._gather()
        stats = self._stats(gather)
        if int(stats[:, 0].sum()) == 0:  # the same on every rank, so all raise: none waits in a gather
            raise ValueError("Expected at least one `update` before `compute`, but got none")
        if gather is None:
            return retrieval_metrics(
                dim_zero_cat(self.embeddings), dim_zero_cat(self.labels), chunk_size=self.chunk_size
            )
        dim, width = int(stats[:, 1].max()), int(stats[:, 2].max())
        dtype = torch.float64 if bool(stats[:, 3].any()) else torch.float32  # exact for every float dtype given
        if self.embeddings:
            embeddings, labels = dim_zero_cat(self.embeddings).to(dtype), dim_zero_cat(self.labels).long()
        else:  # an empty rank sends rows of the shapes and dtypes the others send
            embeddings = torch.zeros(0, dim, dtype=dtype, device=self.device)
            labels = torch.zeros((0, width) if width >= 0 else (0,), dtype=torch.long, device=self.device)
        embeddings, labels = torch.cat(gather(embeddings)), torch.cat(gather(labels))
        return retrieval_metrics(embeddings, labels, chunk_size=self.chunk_size)
