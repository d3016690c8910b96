"""Fused forward/backward of the SupCon L_out loss (Khosla et al. 2020, Eq. 2) with class labels.

For anchor ``i`` with positives ``P(i)`` (same class, not ``i`` itself) and contrast set ``A(i)`` (all but ``i``),

    l_i = log sum_{a in A(i)} exp(s_ia) - 1/|P(i)| sum_{p in P(i)} s_ip,      s_ij = z_i . z_j / tau.

Because ``sum_{p in P(i)} s_ip = z_i . (sum of the class of i - z_i) / tau``, the positive term needs per-class
sums of features (an ``O(N D)`` job), not an N x N mask. The only N x N object is the logit matrix, which is
turned in place into the softmax and kept for the backward pass:

    dl_i / ds_ij = softmax_ij - [j in P(i)] / |P(i)|,

and the positive part of the gradient again goes through class sums. One forward matmul and two backward
matmuls in all. With ``chunk_size`` the logits are built for a slice of anchors at a time and recomputed in the
backward pass (four matmuls, memory ``chunk_size x N``), for global batches whose N x N matrix does not fit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def _logits(anchors: Tensor, contrast: Tensor, self_index: Tensor) -> Tensor:
    """``anchors @ contrast.T`` with each anchor's own column set to -inf: ``(m, K)``."""
    logits = anchors @ contrast.T
    logits[torch.arange(logits.shape[0], device=logits.device), self_index] = float("-inf")
    return logits


class FusedSupConOut(torch.autograd.Function):
    """Per-anchor L_out losses; see the module docstring. Anchors without positives get 0 and no gradient."""

    @staticmethod
    def forward(
        ctx: Any,
        anchors: Tensor,
        contrast: Tensor,
        anchor_class: Tensor,
        contrast_class: Tensor,
        self_index: Tensor,
        inv_temperature: float,
        chunk_size: int | None,
    ) -> Tensor:
        # anchors: (M, D); contrast: (K, D); anchor_class: (M,) and contrast_class: (K,) in [0, n_classes);
        # self_index: (M,) column of each anchor inside `contrast`.
        num_anchors, num_contrast = anchors.shape[0], contrast.shape[0]
        n_classes = int(contrast_class.max().item()) + 1
        scaled = anchors * inv_temperature  # (M, D)
        class_sum = contrast.new_zeros(n_classes, contrast.shape[1]).index_add_(0, contrast_class, contrast)
        num_pos = torch.bincount(contrast_class, minlength=n_classes)[anchor_class] - 1  # (M,)
        valid = num_pos > 0
        own = contrast[self_index]  # (M, D)
        pos_mean = (scaled * (class_sum[anchor_class] - own)).sum(1) / num_pos.clamp(min=1)  # (M,)

        step = num_anchors if chunk_size is None else max(1, chunk_size)
        lse = scaled.new_empty(num_anchors)
        probs = None
        if num_contrast > 1:
            for start in range(0, num_anchors, step):
                stop = min(start + step, num_anchors)
                logits = _logits(scaled[start:stop], contrast, self_index[start:stop])  # (m, K)
                lse[start:stop] = torch.logsumexp(logits, dim=1)
                if chunk_size is None:
                    probs = logits.sub_(lse[:, None]).exp_()  # softmax over A(i), in place
        else:  # a lone view of a lone sample: nothing to contrast with
            lse.zero_()
        loss = torch.where(valid, lse - pos_mean, torch.zeros_like(lse))

        ctx.save_for_backward(scaled, contrast, anchor_class, contrast_class, self_index, num_pos, lse)
        ctx.probs = probs
        ctx.inv_temperature = inv_temperature
        ctx.step = step
        ctx.n_classes = n_classes
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        scaled, contrast, anchor_class, contrast_class, self_index, num_pos, lse = ctx.saved_tensors
        num_anchors, dim = scaled.shape
        weight = torch.where(num_pos > 0, grad_loss, torch.zeros_like(grad_loss))  # (M,)
        pos_weight = weight / num_pos.clamp(min=1)  # (M,)
        weighted = scaled * weight[:, None]  # (M, D)

        grad_scaled = scaled.new_zeros(num_anchors, dim)
        grad_contrast = contrast.new_zeros(contrast.shape)
        if contrast.shape[0] > 1:
            step = ctx.step
            for start in range(0, num_anchors, step):
                stop = min(start + step, num_anchors)
                probs = ctx.probs
                if probs is None:
                    logits = _logits(scaled[start:stop], contrast, self_index[start:stop])
                    probs = logits.sub_(lse[start:stop, None]).exp_()
                grad_scaled[start:stop] = (probs @ contrast) * weight[start:stop, None]
                grad_contrast.addmm_(probs.T, weighted[start:stop])
        ctx.probs = None

        # Positive part, through class sums: -[j in P(i)] / |P(i)| for every anchor i.
        class_sum = contrast.new_zeros(ctx.n_classes, dim).index_add_(0, contrast_class, contrast)
        grad_scaled -= pos_weight[:, None] * (class_sum[anchor_class] - contrast[self_index])
        pos_anchor = scaled * pos_weight[:, None]  # (M, D)
        anchor_sum = scaled.new_zeros(ctx.n_classes, dim).index_add_(0, anchor_class, pos_anchor)
        grad_contrast -= anchor_sum[contrast_class]
        grad_contrast.index_add_(0, self_index, pos_anchor)  # an anchor is not its own positive

        grad_anchors = grad_scaled * ctx.inv_temperature
        return grad_anchors, grad_contrast, None, None, None, None, None
