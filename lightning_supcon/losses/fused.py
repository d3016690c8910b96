"""Fused forward/backward of the SupCon L_out loss (Khosla et al. 2020, Eq. 2) with class labels.

For anchor ``i`` with positives ``P(i)`` (same class, not ``i`` itself) and contrast set ``A(i)`` (all but ``i``),

    l_i = log sum_{a in A(i)} exp(s_ia) - 1/|P(i)| sum_{p in P(i)} s_ip,      s_ij = z_i . z_j / tau.

Because ``sum_{p in P(i)} s_ip = z_i . (sum of the class of i - z_i) / tau``, the positive term needs per-class
sums of features (an ``O(N D)`` job), not an N x N mask. The only N x N object is the matrix of shifted
exponentials ``exp(s_ij - shift_i)``, made by one ``addmm`` and one in-place ``exp_`` and kept for the backward
pass, where the softmax normalisation is folded into per-row weights:

    dl_i / ds_ij = softmax_ij - [j in P(i)] / |P(i)|,

and the positive part of the gradient again goes through class sums. One forward matmul and two backward
matmuls in all. With ``chunk_size`` the logits are built for a slice of anchors at a time and recomputed in the
backward pass (four matmuls, memory ``chunk_size x N``), for global batches whose N x N matrix does not fit.

``class_mean`` is the class-averaged denominator of Balanced Contrastive Learning (Zhu et al., CVPR 2022,
https://arxiv.org/abs/2207.09052, "class-averaging"): ``sum_{a in A(i)} exp(s_ia)`` becomes
``sum_a exp(s_ia) / n_c(a)(i)``, where ``n_c(i)`` counts the contrast entries of class ``c`` (views included) other
than ``i``. The weights multiply the saved exponentials in place, so the gradient keeps the form above with
``softmax_ij`` the weighted softmax. With anchors and contrast entries sorted by class, the weights cost one more
in-place pass over the block (``1 / n_c`` per column) and one over each class's own block (the anchor excluded).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lightning_supcon.losses.options import SupConOptions

# exp(-50): a row whose largest shifted exponential is smaller is recomputed with its exact maximum, so every
# term within exp(-37) of the row's largest stays a normal float32.
_UNDERFLOW_GUARD = math.exp(-50.0)


def _shifted_exp(scaled: Tensor, contrast: Tensor, self_index: Tensor, shift: Tensor) -> Tensor:
    """``exp(s_ij - shift_i)`` for a block of anchors, with each anchor's own column set to 0: ``(m, K)``.

    The shift is folded into the matmul (``addmm``), so the only pass over the block is the in-place ``exp_``.
    """
    block = torch.addmm(-shift[:, None], scaled, contrast.T)
    block.exp_()
    block[torch.arange(block.shape[0], device=block.device), self_index] = 0.0
    return block


def _exact_rows(scaled: Tensor, contrast: Tensor, self_index: Tensor) -> tuple[Tensor, Tensor]:
    """Row maxima (excluding the anchor itself) and ``exp(s_ij - max_i)`` for a few rows."""
    logits = scaled @ contrast.T
    logits[torch.arange(logits.shape[0], device=logits.device), self_index] = float("-inf")
    row_max = logits.amax(dim=1)
    return row_max, logits.sub_(row_max[:, None]).exp_()


class ClassAverage:
    """The class-averaging weights ``1 / n_c(i)``, applied in place to blocks of exponentials.

    Needs anchors and contrast entries sorted by class (see :func:`fused_supcon_out`): then the anchor's own class
    is one contiguous range of columns, and a block is weighted by one in-place pass (``1 / n_c`` per column)
    plus, on each class's own range, the factor ``n_c / (n_c - 1)`` (the anchor is not in its own count).
    """

    def __init__(self, anchor_class: Tensor, contrast_class: Tensor, n_classes: int, dtype: torch.dtype) -> None:
        counts = torch.bincount(contrast_class, minlength=n_classes)
        self.column = 1.0 / counts[contrast_class].to(dtype)  # (K,)
        self.counts: list[int] = counts.tolist()
        self.first = [0, *torch.cumsum(counts, 0).tolist()[:-1]]  # each class's first column
        self.anchor_class = anchor_class

    def apply_(self, block: Tensor, start: int) -> None:
        """Weight ``block``, the exponentials of anchors ``start : start + len(block)``, in place."""
        block.mul_(self.column)
        rows = self.anchor_class[start : start + block.shape[0]]
        classes, lengths = torch.unique_consecutive(rows, return_counts=True)
        row = 0
        for c, length in zip(classes.tolist(), lengths.tolist(), strict=True):
            n, first = self.counts[c], self.first[c]
            if n > 1:
                block[row : row + length, first : first + n].mul_(n / (n - 1))
            row += length


def fused_supcon_out(
    anchors: Tensor, contrast: Tensor, contrast_class: Tensor, self_index: Tensor, options: SupConOptions
) -> Tensor:
    """Per-anchor L_out losses ``(M,)`` of :class:`FusedSupConOut` at ``options.temperature`` and
    ``options.chunk_size``; with ``options.denominator == "class_mean"`` the anchors and contrast entries go through it
    sorted by class (gathers of ``O(N D)``, undone on the way out).

    Args:
        anchors: ``(M, D)``, the rows of ``contrast`` at ``self_index``.
        contrast: ``(K, D)``.
        contrast_class: ``(K,)`` class of each contrast entry, in ``[0, n_classes)``; an anchor's class is that of
            its own column.
        self_index: ``(M,)`` column of each anchor inside ``contrast``.
        options: The loss's options (the caller has checked that they take the fused path: ``summation="out"``,
            ``denominator`` ``"all"`` or ``"class_mean"``, no ``positives_cap``).
    """
    inv_temperature = 1.0 / options.temperature
    if options.denominator != "class_mean":
        return FusedSupConOut.apply(  # type: ignore[no-any-return]
            anchors, contrast, contrast_class, self_index, inv_temperature, options.chunk_size, False
        )
    anchor_order = torch.argsort(contrast_class[self_index], stable=True)
    contrast_order = torch.argsort(contrast_class, stable=True)
    contrast_rank = torch.argsort(contrast_order)  # where each contrast entry goes
    per_anchor = FusedSupConOut.apply(
        anchors[anchor_order],
        contrast[contrast_order],
        contrast_class[contrast_order],
        contrast_rank[self_index[anchor_order]],
        inv_temperature,
        options.chunk_size,
        True,
    )
    return per_anchor[torch.argsort(anchor_order)]  # type: ignore[no-any-return]


class FusedSupConOut(torch.autograd.Function):
    """Per-anchor L_out losses; see the module docstring. Anchors without positives get 0 and no gradient."""

    @staticmethod
    def forward(
        ctx: Any,
        anchors: Tensor,
        contrast: Tensor,
        contrast_class: Tensor,
        self_index: Tensor,
        inv_temperature: float,
        chunk_size: int | None,
        class_mean: bool,
    ) -> Tensor:
        # anchors: (M, D); contrast: (K, D); contrast_class: (K,) in [0, n_classes);
        # self_index: (M,) column of each anchor inside `contrast`.
        num_anchors, num_contrast = anchors.shape[0], contrast.shape[0]
        anchor_class = contrast_class[self_index]  # (M,)
        n_classes = int(contrast_class.max().item()) + 1
        scaled = anchors * inv_temperature  # (M, D)
        class_sum = contrast.new_zeros(n_classes, contrast.shape[1]).index_add_(0, contrast_class, contrast)
        num_pos = torch.bincount(contrast_class, minlength=n_classes)[anchor_class] - 1  # (M,)
        valid = num_pos > 0
        average = ClassAverage(anchor_class, contrast_class, n_classes, scaled.dtype) if class_mean else None
        own = contrast[self_index]  # (M, D)
        pos_mean = (scaled * (class_sum[anchor_class] - own)).sum(1) / num_pos.clamp(min=1)  # (M,)

        # Shift each row by the Cauchy-Schwarz bound |a_i| max_j |c_j| >= max_j s_ij: no max pass needed.
        shift = scaled.norm(dim=1) * contrast.norm(dim=1).max()  # (M,)
        row_sum = torch.ones_like(shift)
        step = num_anchors if chunk_size is None else max(1, chunk_size)
        exps = None
        if num_contrast > 1:
            for start in range(0, num_anchors, step):
                stop = min(start + step, num_anchors)
                block = _shifted_exp(scaled[start:stop], contrast, self_index[start:stop], shift[start:stop])
                loose = (block.amax(dim=1) < _UNDERFLOW_GUARD).nonzero().squeeze(1)
                if loose.numel():  # the bound was far above the row's maximum: redo those rows exactly
                    rows = loose + start
                    shift[rows], block[loose] = _exact_rows(scaled[rows], contrast, self_index[rows])
                if average is not None:
                    average.apply_(block, start)
                row_sum[start:stop] = block.sum(dim=1)
                if chunk_size is None:
                    exps = block
        lse = shift + row_sum.log() if num_contrast > 1 else torch.zeros_like(shift)
        loss = torch.where(valid, lse - pos_mean, torch.zeros_like(lse))

        # Saved tensors (the N x N block included) are freed by autograd right after the backward pass.
        ctx.save_for_backward(scaled, contrast, anchor_class, contrast_class, self_index, num_pos, shift, row_sum, exps)
        ctx.average = average
        ctx.inv_temperature = inv_temperature
        ctx.step = step
        ctx.n_classes = n_classes
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        scaled, contrast, anchor_class, contrast_class, self_index, num_pos, shift, row_sum, saved_exps = (
            ctx.saved_tensors
        )
        num_anchors, dim = scaled.shape
        weight = torch.where(num_pos > 0, grad_loss, torch.zeros_like(grad_loss))  # (M,)
        pos_weight = weight / num_pos.clamp(min=1)  # (M,)
        soft_weight = weight / row_sum  # (M,): softmax = exps / row_sum, folded into the row weights

        grad_scaled = scaled.new_zeros(num_anchors, dim)
        grad_contrast = contrast.new_zeros(contrast.shape)
        if contrast.shape[0] > 1:
            step = ctx.step
            for start in range(0, num_anchors, step):
                stop = min(start + step, num_anchors)
                exps = saved_exps
                if exps is None:
                    exps = _shifted_exp(scaled[start:stop], contrast, self_index[start:stop], shift[start:stop])
                    if ctx.average is not None:
                        ctx.average.apply_(exps, start)
                grad_scaled[start:stop] = (exps @ contrast) * soft_weight[start:stop, None]
                grad_contrast.addmm_(exps.T, scaled[start:stop] * soft_weight[start:stop, None])

        # Positive part, through class sums: -[j in P(i)] / |P(i)| for every anchor i.
        class_sum = contrast.new_zeros(ctx.n_classes, dim).index_add_(0, contrast_class, contrast)
        grad_scaled -= pos_weight[:, None] * (class_sum[anchor_class] - contrast[self_index])
        pos_anchor = scaled * pos_weight[:, None]  # (M, D)
        anchor_sum = scaled.new_zeros(ctx.n_classes, dim).index_add_(0, anchor_class, pos_anchor)
        grad_contrast -= anchor_sum[contrast_class]
        grad_contrast.index_add_(0, self_index, pos_anchor)  # an anchor is not its own positive

        grad_anchors = grad_scaled * ctx.inv_temperature
        return grad_anchors, grad_contrast, None, None, None, None, None
