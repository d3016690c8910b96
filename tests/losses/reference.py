"""A slow, loop-based SupCon loss written straight from the paper's equations, for tests only.

Khosla et al. 2020, Eq. 2 (L_out) and Eq. 3 (L_in); the denominator and positives-cap variants as defined by
the official TensorFlow implementation. Every anchor, positive and denominator term is visited in a Python loop.
Issue 17's variants, each from its definition:
- weighted positives (HobbitLong/SupContrast's float mask): L_out ``-sum_p w_p log p_p / sum_p w_p``, L_in
  ``-log( sum_p w_p p_p / sum_p w_p )``; entries of weight 0 are the negatives;
- multi-hot labels: ``w`` = Jaccard overlap of the two label sets (``"any"``: 1 if they share one), 1 for a
  sample's own views;
- label -1: a class of its own (positives: its own views only; a negative for everyone else);
- ``denominator="class_mean"`` (Zhu et al., CVPR 2022, class-averaging): each term of the denominator divided by
  the number of entries of its class, views and queue included, the anchor not counted.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _pair_weights(labels: Tensor | None, mask: Tensor | None, multilabel: str, batch: int) -> list[list[float]]:
    """``w[b][c]``: the weight of sample ``c`` as a positive of sample ``b``, by the definitions above."""
    if mask is not None:
        return [[float(mask[b, c]) for c in range(batch)] for b in range(batch)]
    if labels is not None and labels.dim() == 2:
        sets = [{k for k in range(labels.shape[1]) if labels[b, k] == 1} for b in range(batch)]
        weights = []
        for b in range(batch):
            row = []
            for c in range(batch):
                shared, union = len(sets[b] & sets[c]), len(sets[b] | sets[c])
                if b == c:
                    row.append(1.0)
                elif multilabel == "any":
                    row.append(1.0 if shared else 0.0)
                else:
                    row.append(shared / union if union else 0.0)
            weights.append(row)
        return weights
    ids = _class_ids(labels, batch)
    return [[1.0 if ids[b] == ids[c] else 0.0 for c in range(batch)] for b in range(batch)]


def _class_ids(labels: Tensor | None, batch: int) -> list[object]:
    """Each sample's class; an unknown label (-1) and SimCLR make a class of the sample alone."""
    if labels is None:
        return [("sample", b) for b in range(batch)]
    return [("sample", b) if int(labels[b]) == -1 else int(labels[b]) for b in range(batch)]


def reference_supcon(
    features: Tensor,
    labels: Tensor | None = None,
    mask: Tensor | None = None,
    temperature: float = 0.1,
    base_temperature: float | None = None,
    contrast_mode: str = "all",
    summation: str = "out",
    denominator: str = "all",
    positives_cap: int | None = None,
    reduction: str = "mean",
    queue: Tensor | None = None,
    queue_labels: Tensor | None = None,
    multilabel: str = "jaccard",
) -> Tensor:
    batch, views = features.shape[:2]
    z = features.reshape(batch, views, -1)
    weight = _pair_weights(labels, mask, multilabel, batch)

    positive_samples = []
    for b in range(batch):
        others = [c for c in range(batch) if c != b and weight[b][c] > 0]
        if positives_cap is not None:
            others = others[: positives_cap // views]
        positive_samples.append(set(others) | ({b} if weight[b][b] > 0 else set()))

    class_of: dict[tuple[int, int], object] = {}  # class of each entry, for class_mean
    if labels is None or labels.dim() == 1:
        ids = _class_ids(labels, batch)
        class_of = {(v, c): ids[c] for v in range(views) for c in range(batch)}
        for j in range(0 if queue is None else queue.shape[0]):
            known = queue_labels is not None and int(queue_labels[j]) != -1
            class_of[(-1, j)] = int(queue_labels[j]) if known else ("queue", j)

    entries = [(v, c) for v in range(views) for c in range(batch)]
    anchors = entries if contrast_mode == "all" else [(0, b) for b in range(batch)]
    losses: dict[tuple[int, int], Tensor] = {}
    for va, b in anchors:

        def sim(v: int, c: int, va: int = va, b: int = b) -> Tensor:
            other = queue[c].flatten() if v == -1 else z[c, v]  # view -1: a queue entry
            return torch.dot(z[b, va], other) / temperature

        others = [(v, c) for v, c in entries if (v, c) != (va, b)]
        positives = [(v, c) for v, c in others if c in positive_samples[b]]
        pos_weights = [weight[b][c] for _, c in positives]
        negatives = [(v, c) for v, c in others if weight[b][c] == 0]
        for j in range(0 if queue is None else queue.shape[0]):
            is_positive = queue_labels is not None and labels is not None and class_of[(-1, j)] == class_of[(0, b)]
            (positives if is_positive else negatives).append((-1, j))
            if is_positive:
                pos_weights.append(1.0)
        if not positives or (denominator == "only_negatives" and not negatives):
            continue
        log_terms = []
        for v, c in positives:
            if denominator == "all":
                den_terms = [sim(*e) for e in positives + negatives]
            elif denominator == "class_mean":
                den_terms = []
                for e in positives + negatives:
                    count = sum(1 for f in class_of if f != (va, b) and class_of[f] == class_of[e])
                    den_terms.append(sim(*e) - math.log(count))
            elif denominator == "one_positive":
                den_terms = [sim(v, c)] + [sim(*e) for e in negatives]
            else:
                den_terms = [sim(*e) for e in negatives]
            log_terms.append(sim(v, c) - torch.logsumexp(torch.stack(den_terms), 0))
        log_terms_t = torch.stack(log_terms)
        w = torch.tensor(pos_weights, dtype=log_terms_t.dtype)
        if summation == "out":
            loss = -(w * log_terms_t).sum() / w.sum()
        else:
            loss = -(torch.logsumexp(log_terms_t + w.log(), 0) - math.log(sum(pos_weights)))  # float64 constants
        if base_temperature is not None:
            loss = loss * (temperature / base_temperature)
        losses[(va, b)] = loss

    zero = features.sum() * 0
    if reduction == "none":
        out = []
        for b in range(batch):
            mine = [losses[(v, c)] for v, c in anchors if c == b and (v, c) in losses]
            out.append(torch.stack(mine).mean() if mine else zero)
        return torch.stack(out)
    if not losses:
        return zero
    total = torch.stack(list(losses.values())).sum()
    return total if reduction == "sum" else total / len(losses)
