"""Weighted kNN maths: exact neighbour candidates of a bank held in shards, their merge, the vote, ``knn_predict``.

The ``k`` neighbours of a query are the bank entries of highest cosine similarity, ties broken by the **lower
global bank index** (the position of the entry in the bank concatenated over its shards, in shard order). With that
rule the neighbour set is a function of the bank alone, not of how it was split: the top ``k`` of a union is the top
``k`` of the union of each part's top ``k``. So a bank can be scanned in blocks, or held in shards on several
processes, and each part's candidates merged, with the same neighbours as one scan of the whole bank.

That needs each similarity to be the same bits whatever the shapes of the matrix product it came from, which a
float32 GEMM does not give (its summation order depends on the shapes: 1-ulp differences). So
:func:`similarity_features` rounds the L2-normalised features to multiples of ``2^-26`` in float64: every product
is then a multiple of ``2^-52`` and every partial sum, of magnitude below 2, is exact in float64, so the product is
exact in any order, on any device (the rounding moves a similarity by ~1e-8, below float32's own precision).
Float64 features keep their precision (no rounding), and are then split-independent up to float64 rounding.
Candidates are kept in a canonical order, by ascending global index, and the votes are summed in that order, so the
class scores are the same bits however the bank was split.

- [0] Wu et al., Unsupervised Feature Learning via Non-Parametric Instance Discrimination, CVPR 2018,
  https://arxiv.org/abs/1805.01978 (Sec. 3.4, weighted kNN)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_supcon.utils.checks import check_positive_integers
from lightning_supcon.utils.numerics import compute_dtype

PAD_INDEX = torch.iinfo(torch.int64).max
"""Global index of a padding candidate (similarity ``-inf``): never a neighbour while ``k`` <= the bank size."""


class Candidates(NamedTuple):
    """Neighbour candidates of ``Q`` queries, ``(Q, m)`` each, sorted by ascending ``bank_index`` along dim 1;
    ``label`` is ``(Q, m, L)`` for multi-hot bank labels ``(N, L)``."""

    similarity: Tensor
    bank_index: Tensor
    label: Tensor


GRID_BITS = 26
"""Features of at most float32 precision are rounded to multiples of ``2^-GRID_BITS`` (exact products, above)."""


def similarity_features(x: Tensor) -> Tensor:
    """Rows of ``x`` L2-normalised, for exact similarities: float64, on the ``2^-26`` grid unless ``x`` is float64.

    Args:
        x: ``(N, D)`` features of any floating dtype.

    Returns:
        ``(N, D)`` float64; the product of two such tensors is exact (any order) unless ``x`` was float64.

    Example:
        >>> q = similarity_features(torch.tensor([[3.0, 4.0]]))
        >>> q.dtype, bool((q * 2**26 == (q * 2**26).round()).all())
        (torch.float64, True)
    """
    if x.dtype == torch.float64:
        return F.normalize(x, dim=1)
    scale = 2.0**GRID_BITS
    return F.normalize(x.float(), dim=1).double().mul_(scale).round_().div_(scale)  # exact: powers of two, in place


def exact_topk(values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest entries of each row, ties at the boundary broken by the lower column.

    ``torch.topk`` leaves the choice among equal values unspecified; here a row whose ``k``-th value is tied with
    entries left out takes the tied entries of lowest column. Cost: one ``topk`` and one comparison pass.

    Args:
        values: ``(Q, M)`` scores, no NaN.
        k: How many to keep, ``1 <= k <= M``.

    Returns:
        ``(values (Q, k), columns (Q, k))``, in no particular order along dim 1.

    Example:
        >>> exact_topk(torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0]]), 2)[1].sort(dim=1).values
        tensor([[1, 2]])
    """
    top, cols = values.topk(k, dim=1)
    if k == values.shape[1] or values.shape[0] == 0:
        return top, cols
    kth = top[:, -1:]  # (Q, 1)
    kept_ties = (top == kth).sum(dim=1)  # (Q,)
    ambiguous = ((values == kth).sum(dim=1) > kept_ties).nonzero().squeeze(1)
    if ambiguous.numel():
        rows, threshold = values[ambiguous], kth[ambiguous]  # (A, M), (A, 1)
        tied = rows == threshold
        keep = (rows > threshold) | (tied & (tied.cumsum(dim=1) <= kept_ties[ambiguous, None]))
        chosen = keep.nonzero()[:, 1].view(-1, k)  # row-major: columns ascending within each row
        cols, top = cols.clone(), top.clone()
        cols[ambiguous], top[ambiguous] = chosen, rows.gather(1, chosen)
    return top, cols


def _take(label: Tensor, cols: Tensor) -> Tensor:
    """``label[q, cols[q, j]]`` for labels ``(Q, M)`` or multi-hot ``(Q, M, L)`` and columns ``(Q, m)``."""
    if label.dim() == 2:
        return label.gather(1, cols)
    return label.gather(1, cols[..., None].expand(-1, -1, label.shape[2]))


def _by_index(similarity: Tensor, index: Tensor, label: Tensor) -> Candidates:
    index, order = index.sort(dim=1)
    return Candidates(similarity.gather(1, order), index, _take(label, order))


def merge_candidates(parts: list[Candidates], k: int) -> Candidates:
    """The top ``k`` of several parts' candidates (ties by lower global index), sorted by index.

    Args:
        parts: Candidates of the same queries, each sorted by index, the parts in ascending index order (blocks of
            one bank in order, or shards in rank order), so that column order is index order.
        k: Neighbours to keep; at most the total number of columns.

    Returns:
        ``(Q, k)`` candidates.
    """
    similarity = torch.cat([part.similarity for part in parts], dim=1)
    top, cols = exact_topk(similarity, k)
    index = torch.cat([part.bank_index for part in parts], dim=1).gather(1, cols)
    label = _take(torch.cat([part.label for part in parts], dim=1), cols)
    return _by_index(top, index, label)


def _blocks(features: list[Tensor], labels: list[Tensor], rows: int) -> Iterator[tuple[int, Tensor, Tensor]]:
    """``(start, block, block_labels)`` of at most ``rows`` rows, over a bank held as a list of batches."""
    start, pending, pending_labels, size = 0, [], [], 0
    for batch, batch_labels in zip(features, labels, strict=True):
        for offset in range(0, batch.shape[0], rows):
            piece = batch[offset : offset + rows]
            pending.append(piece)
            pending_labels.append(batch_labels[offset : offset + rows])
            size += piece.shape[0]
            if size >= rows:
                yield start, torch.cat(pending), torch.cat(pending_labels)
                start, pending, pending_labels, size = start + size, [], [], 0
    if size:
        yield start, torch.cat(pending), torch.cat(pending_labels)


def shard_candidates(
    query: Tensor,
    features: list[Tensor],
    labels: list[Tensor],
    offset: int,
    k: int,
    block_rows: int = 4096,
    label_shape: tuple[int, ...] = (),
) -> Candidates:
    """The ``k`` best candidates of normalised ``query`` in one shard of the bank, padded to ``k`` columns.

    The shard is scanned ``block_rows`` entries at a time, each block through :func:`similarity_features`, so
    memory is ``Q x block_rows`` float64 similarities plus one block, whatever the shard's storage dtype.

    Args:
        query: ``(Q, D)`` queries from :func:`similarity_features` (float64).
        features: The shard's entries as a list of ``(B_i, D)`` batches (any floating dtype, not normalised).
        labels: Their integer labels, ``(B_i,)`` each, or multi-hot labels ``(B_i, L)``.
        offset: Global index of the shard's first entry.
        k: Candidates per query; a shard with fewer entries pads with similarity ``-inf`` and index ``PAD_INDEX``.
        block_rows: Bank entries per block.
        label_shape: The trailing shape of one label, ``()`` for class labels, ``(L,)`` for multi-hot labels: the
            shape of the padding labels of an empty shard, which must match the other shards' under DDP.

    Returns:
        ``(Q, k)`` candidates sorted by index.

    Raises:
        ValueError: When ``labels`` do not have the trailing shape ``label_shape``.
    """
    if labels and tuple(labels[0].shape[1:]) != tuple(label_shape):
        raise ValueError(
            f"Expected labels of trailing shape {tuple(label_shape)} (`label_shape`), but got "
            f"{tuple(labels[0].shape[1:])}"
        )
    best: Candidates | None = None
    for start, block, block_labels in _blocks(features, labels, block_rows):
        similarity = query @ similarity_features(block.to(query.device)).T  # (Q, B), exact
        top, cols = exact_topk(similarity, min(k, similarity.shape[1]))
        part = _by_index(top, cols + (offset + start), block_labels.to(query.device)[cols])
        best = (
            part if best is None else merge_candidates([best, part], min(k, best.bank_index.shape[1] + cols.shape[1]))
        )
    missing = k - (0 if best is None else best.bank_index.shape[1])
    pad = Candidates(
        query.new_full((query.shape[0], missing), float("-inf")),
        torch.full((query.shape[0], missing), PAD_INDEX, dtype=torch.long, device=query.device),
        torch.zeros(query.shape[0], missing, *label_shape, dtype=torch.long, device=query.device),
    )
    if best is None:
        return pad
    return Candidates(*(torch.cat(pair, dim=1) for pair in zip(best, pad, strict=True))) if missing else best


def weighted_votes(candidates: Candidates, num_classes: int, temperature: float) -> tuple[Tensor, Tensor]:
    """Class scores ``sum exp(s_i / T)`` over the neighbours of each class [0], and which classes got a vote.

    Args:
        candidates: ``(Q, k)`` neighbours, without padding, in index order (the order of the summation).
        num_classes: Number of classes ``C``.
        temperature: ``T`` > 0.

    Returns:
        ``(scores (Q, C), voted (Q, C) bool)``. A vote's weight can underflow to 0 (a far neighbour at a small
        temperature), so "got a vote" is kept apart from "scores above 0".
    """
    similarity, _, label = candidates
    scores = similarity.new_zeros(similarity.shape[0], num_classes)
    scores.scatter_add_(1, label, (similarity / temperature).exp())
    voted = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device).scatter_(1, label, True)
    return scores, voted


def check_knn_args(num_classes: int, k: int, temperature: float, chunk_size: int, bank_chunk_size: int = 1) -> None:
    """Raise ``ValueError`` naming the first bad argument of the weighted kNN."""
    check_positive_integers(num_classes=num_classes, k=k)
    if not temperature > 0:
        raise ValueError(f"Expected argument `temperature` to be > 0, but got {temperature}")
    check_positive_integers(chunk_size=chunk_size, bank_chunk_size=bank_chunk_size)


def knn_predict(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.07,
    chunk_size: int = 1024,
    bank_chunk_size: int = 4096,
) -> Tensor:
    """Class scores of the weighted kNN classifier of [0].

    Features are L2-normalised here, so raw encoder outputs may be passed; the similarities are computed in
    float64 (:func:`similarity_features`), the scores returned in at least float32 (float64 inputs stay float64).
    ``k`` larger than the bank is clamped to the bank size. Queries are processed ``chunk_size`` at a time against
    ``bank_chunk_size`` bank entries at a time: memory ``chunk_size x bank_chunk_size`` similarities besides the
    inputs.

    Args:
        query: ``(Q, D)`` features to classify.
        bank: ``(N, D)`` labelled reference features, ``N >= 1``, of any floating dtype (e.g. bfloat16).
        bank_labels: ``(N,)`` integer labels of ``bank`` in ``[0, num_classes)``.
        num_classes: Number of classes.
        k: Number of neighbours that vote; among bank entries of equal similarity the earlier ones are taken.
        temperature: ``T`` of the weights ``exp(similarity / T)``, > 0.
        chunk_size: Queries per block.
        bank_chunk_size: Bank entries per block.

    Returns:
        ``(Q, num_classes)`` scores; the prediction is their argmax (the lowest class index on a tie). A class
        that got no vote scores 0.

    Raises:
        ValueError: For bad arguments or shapes, an empty bank, or labels out of range.

    Example:
        >>> import torch
        >>> bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> bank_labels = torch.tensor([0, 0, 1])
        >>> query = torch.tensor([[1.0, 0.2], [0.1, 1.0]])
        >>> knn_predict(query, bank, bank_labels, num_classes=2, k=2, temperature=1.0).argmax(dim=1)
        tensor([0, 1])
    """
    check_knn_args(num_classes, k, temperature, chunk_size, bank_chunk_size)
    if query.ndim != 2 or bank.ndim != 2 or query.shape[1] != bank.shape[1]:
        raise ValueError(
            f"Expected `query` (Q, D) and `bank` (N, D) with the same D, but got {tuple(query.shape)} and "
            f"{tuple(bank.shape)}"
        )
    if bank_labels.shape != (bank.shape[0],):
        raise ValueError(f"Expected `bank_labels` of shape ({bank.shape[0]},), but got {tuple(bank_labels.shape)}")
    if bank.shape[0] == 0:
        raise ValueError("Expected a non-empty `bank`, but got 0 entries")
    bank_labels = bank_labels.long()
    if bank_labels.min() < 0 or bank_labels.max() >= num_classes:
        raise ValueError(
            f"Expected `bank_labels` in [0, {num_classes}), but got values in "
            f"[{int(bank_labels.min())}, {int(bank_labels.max())}]"
        )
    k = min(k, bank.shape[0])
    dtype = compute_dtype(torch.promote_types(query.dtype, bank.dtype))
    scores = [query.new_zeros(0, num_classes, dtype=dtype)]
    for start in range(0, query.shape[0], chunk_size):
        chunk = similarity_features(query[start : start + chunk_size])  # (C, D)
        neighbours = shard_candidates(chunk, [bank], [bank_labels], offset=0, k=k, block_rows=bank_chunk_size)
        scores.append(weighted_votes(neighbours, num_classes, temperature)[0].to(dtype))
    return torch.cat(scores)
