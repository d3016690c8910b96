"""A slow, loop-based SupCon loss written straight from the paper's equations, for tests only.

Khosla et al. 2020, Eq. 2 (L_out) and Eq. 3 (L_in); the denominator and positives-cap variants as defined by
the official TensorFlow implementation. Every anchor, positive and denominator term is visited in a Python loop.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


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
) -> Tensor:
    batch, views = features.shape[:2]
    z = features.reshape(batch, views, -1)
    if mask is None:
        ids = labels.tolist() if labels is not None else list(range(batch))
        same = [[ids[b] == ids[c] for c in range(batch)] for b in range(batch)]
    else:
        same = [[bool(mask[b, c]) for c in range(batch)] for b in range(batch)]

    positive_samples = []
    for b in range(batch):
        others = [c for c in range(batch) if c != b and same[b][c]]
        if positives_cap is not None:
            others = others[: positives_cap // views]
        positive_samples.append(set(others) | ({b} if same[b][b] else set()))

    entries = [(v, c) for v in range(views) for c in range(batch)]
    anchors = entries if contrast_mode == "all" else [(0, b) for b in range(batch)]
    losses: dict[tuple[int, int], Tensor] = {}
    for va, b in anchors:

        def sim(v: int, c: int, va: int = va, b: int = b) -> Tensor:
            other = queue[c].flatten() if v == -1 else z[c, v]  # view -1: a queue entry
            return torch.dot(z[b, va], other) / temperature

        others = [(v, c) for v, c in entries if (v, c) != (va, b)]
        positives = [(v, c) for v, c in others if c in positive_samples[b]]
        negatives = [(v, c) for v, c in others if not same[b][c]]
        for j in range(0 if queue is None else queue.shape[0]):
            is_positive = queue_labels is not None and labels is not None and queue_labels[j] == labels[b]
            (positives if is_positive else negatives).append((-1, j))
        if not positives or (denominator == "only_negatives" and not negatives):
            continue
        log_terms = []
        for v, c in positives:
            if denominator == "all":
                den_terms = [sim(*e) for e in positives + negatives]
            elif denominator == "one_positive":
                den_terms = [sim(v, c)] + [sim(*e) for e in negatives]
            else:
                den_terms = [sim(*e) for e in negatives]
            log_terms.append(sim(v, c) - torch.logsumexp(torch.stack(den_terms), 0))
        log_terms_t = torch.stack(log_terms)
        if summation == "out":
            loss = -log_terms_t.mean()
        else:
            loss = -(torch.logsumexp(log_terms_t, 0) - math.log(len(positives)))  # a float64 constant
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
