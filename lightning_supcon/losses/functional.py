"""Supervised contrastive loss, functional form.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [1] Chen et al., SimCLR, ICML 2020, https://arxiv.org/abs/2002.05709 (the label-free special case)

With ``N = batch x views`` features ``z`` and ``s_ij = z_i . z_j / tau``, for each anchor ``i`` the positives
``P(i)`` are the other entries of its class and ``A(i)`` all entries but ``i``:

- ``summation="out"`` (Eq. 2):  ``l_i = -1/|P(i)| sum_{p in P(i)} log( exp(s_ip) / sum_{a in A(i)} exp(s_ia) )``
- ``summation="in"``  (Eq. 3):  ``l_i = -log( 1/|P(i)| sum_{p in P(i)} exp(s_ip) / sum_{a in A(i)} exp(s_ia) )``

``denominator`` and ``positives_cap`` follow the official TensorFlow implementation (google-research/supcon).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_supcon.losses.fused import FusedSupConOut
from lightning_supcon.losses.layout import check_inputs, view_major
from lightning_supcon.losses.options import ContrastMode, Denominator, Reduction, Summation, check_options
from lightning_supcon.utils import distributed

__all__ = ["ContrastMode", "Denominator", "Reduction", "Summation", "supcon_loss"]


def _masked_logsumexp(logits: Tensor, keep: Tensor) -> Tensor:
    """Row-wise log-sum-exp over ``keep``; ``-inf`` for empty rows, with a finite (zero) gradient there."""
    nonempty = keep.any(dim=1)
    masked = logits.masked_fill(~keep, float("-inf"))
    masked = torch.where(nonempty[:, None], masked, torch.zeros_like(masked))
    return torch.where(nonempty, torch.logsumexp(masked, dim=1), torch.full_like(logits[:, 0], float("-inf")))


def _dense_per_anchor(
    anchors: Tensor,
    contrast: Tensor,
    self_index: Tensor,
    same: Tensor,
    num_anchor_views: int,
    num_views: int,
    offset: int,
    inv_temperature: float,
    summation: str,
    denominator: str,
    positives_cap: int | None,
    queue_same: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Every variant with explicit masks; returns the per-anchor losses ``(M,)`` and their validity ``(M,)``.

    ``same`` is the sample-level positive mask ``(B, B_global)``; rows and columns of the tiled masks are
    ordered view-major (``view * batch + sample``), like ``anchors`` and ``contrast``. ``queue_same`` ``(B, Q)``
    marks the positives among queue entries, which follow the batch in ``contrast``.
    """
    batch = same.shape[0]
    diagonal = torch.zeros_like(same)
    diagonal[torch.arange(batch), offset + torch.arange(batch, device=same.device)] = True
    untiled = same
    if positives_cap is not None:
        others = same & ~diagonal
        keep = others & (others.long().cumsum(dim=1) <= positives_cap // num_views)  # first ones by position
        untiled = keep | (same & diagonal)
    positives = untiled.repeat(num_anchor_views, num_views)  # (M, V * B_global)
    negatives = ~same.repeat(num_anchor_views, num_views)  # capped-out positives are neither
    if queue_same is not None:
        positives = torch.cat([positives, queue_same.repeat(num_anchor_views, 1)], dim=1)  # (M, K)
        negatives = torch.cat([negatives, ~queue_same.repeat(num_anchor_views, 1)], dim=1)
    not_self = torch.ones_like(positives)
    not_self[torch.arange(anchors.shape[0]), self_index] = False
    positives, negatives = positives & not_self, negatives & not_self

    logits = (anchors * inv_temperature) @ contrast.T  # (M, K)
    num_pos = positives.sum(dim=1)
    lse_neg = _masked_logsumexp(logits, negatives)
    valid = num_pos > 0
    if denominator == "all":
        log_den = _masked_logsumexp(logits, positives | negatives)[:, None]
    elif denominator == "one_positive":
        log_den = torch.logaddexp(logits, lse_neg[:, None])
    else:  # only_negatives
        log_den = lse_neg[:, None]
        valid = valid & negatives.any(dim=1)
    log_prob = logits - log_den  # (M, K), meaningful on positives only
    if summation == "out":
        per_anchor = -torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(1) / num_pos.clamp(min=1)
    else:
        log_num_pos = num_pos.clamp(min=1).to(log_prob.dtype).log()  # an integer's log would be float32
        per_anchor = -(_masked_logsumexp(log_prob, positives) - log_num_pos)
    per_anchor = torch.where(valid, per_anchor, torch.zeros_like(per_anchor))
    return per_anchor, valid


def supcon_loss(
    features: Tensor,
    labels: Tensor | None = None,
    mask: Tensor | None = None,
    temperature: float = 0.1,
    base_temperature: float | None = None,
    contrast_mode: ContrastMode = "all",
    summation: Summation = "out",
    denominator: Denominator = "all",
    positives_cap: int | None = None,
    reduction: Reduction = "mean",
    gather_distributed: bool = False,
    chunk_size: int | None = None,
    queue: Tensor | None = None,
    queue_labels: Tensor | None = None,
) -> Tensor:
    """Supervised contrastive loss; the arguments are documented on :class:`~lightning_supcon.SupConLoss`.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> _ = torch.manual_seed(0)
        >>> features = F.normalize(torch.randn(8, 2, 16), dim=-1)
        >>> labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
        >>> supcon_loss(features, labels)
        tensor(4.6211)
        >>> supcon_loss(features, labels, summation="in")
        tensor(3.3616)
    """
    check_options(
        temperature=temperature,
        base_temperature=base_temperature,
        contrast_mode=contrast_mode,
        summation=summation,
        denominator=denominator,
        positives_cap=positives_cap,
        reduction=reduction,
        chunk_size=chunk_size,
    )
    return _supcon_loss(
        features,
        labels,
        mask,
        temperature,
        base_temperature,
        contrast_mode,
        summation,
        denominator,
        positives_cap,
        reduction,
        gather_distributed,
        chunk_size,
        queue,
        queue_labels,
    )


def _supcon_loss(
    features: Tensor,
    labels: Tensor | None,
    mask: Tensor | None,
    temperature: float,
    base_temperature: float | None,
    contrast_mode: ContrastMode,
    summation: Summation,
    denominator: Denominator,
    positives_cap: int | None,
    reduction: Reduction,
    gather_distributed: bool,
    chunk_size: int | None,
    queue: Tensor | None,
    queue_labels: Tensor | None,
) -> Tensor:
    """:func:`supcon_loss` with options already validated by :func:`check_options` (as ``SupConLoss`` does once,
    at construction); the inputs are still checked on every call."""
    check_inputs(features, labels, mask, positives_cap, queue, queue_labels)
    batch, num_views = features.shape[:2]
    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=features.device.type, enabled=False):
        z = features.reshape(batch, num_views, -1).to(dtype)  # (B, V, D)

        use_dist = gather_distributed and distributed.is_distributed()
        sizes = distributed.gather_sizes(batch, z.device) if use_dist else [batch]
        offset = sum(sizes[: distributed.rank()]) if use_dist else 0
        world = len(sizes)
        global_z = distributed.gather(z, sizes) if use_dist else z  # (B_global, V, D)
        global_batch = global_z.shape[0]
        if mask is not None and tuple(mask.shape) != (batch, global_batch):
            raise ValueError(f"Expected `mask` of shape ({batch}, {global_batch}), but got {tuple(mask.shape)}.")

        anchors, contrast, self_index, local_index = view_major(z, global_z, offset, contrast_mode)
        num_anchor_views = num_views if contrast_mode == "all" else 1

        if labels is None and mask is None:  # SimCLR: every sample its own class
            group = torch.arange(global_batch, device=z.device)
        elif labels is not None:
            local_labels = labels.to(z.device).long()
            group = distributed.gather(local_labels, sizes) if use_dist else local_labels
        inv_temperature = 1.0 / temperature

        queue_group = None
        if queue is not None:  # contrast-only entries after the batch; never a gradient into them
            contrast = torch.cat([contrast, queue.detach().reshape(queue.shape[0], -1).to(dtype)])
            if queue_labels is not None:
                queue_group = queue_labels.to(z.device).long()
            else:  # SimCLR: queue entries are nobody's positives
                queue_group = global_batch + torch.arange(queue.shape[0], device=z.device)

        fused = mask is None and summation == "out" and denominator == "all" and positives_cap is None
        if fused:
            all_groups = group if queue_group is None else torch.cat([group, queue_group])
            group_index = torch.unique(all_groups, return_inverse=True)[1]  # in [0, n_groups)
            contrast_class = torch.cat([group_index[:global_batch].repeat(num_views), group_index[global_batch:]])
            anchor_class = contrast_class[self_index]
            per_anchor = FusedSupConOut.apply(
                anchors, contrast, anchor_class, contrast_class, self_index, inv_temperature, chunk_size
            )
            num_pos = torch.bincount(contrast_class)[anchor_class] - 1
            valid = num_pos > 0
        else:
            # Sample-level positives (B, B_global).
            same = mask.to(z.device) != 0 if mask is not None else group[local_index][:, None] == group[None, :]
            per_anchor, valid = _dense_per_anchor(
                anchors,
                contrast,
                self_index,
                same,
                num_anchor_views,
                num_views,
                offset,
                inv_temperature,
                summation,
                denominator,
                positives_cap,
                None if queue_group is None else group[local_index][:, None] == queue_group[None, :],
            )

        if base_temperature is not None:
            per_anchor = per_anchor * (temperature / base_temperature)

        if reduction == "none":
            per_view = per_anchor.reshape(num_anchor_views, batch)
            count = valid.reshape(num_anchor_views, batch).sum(0)
            return per_view.sum(0) / count.clamp(min=1)
        total = per_anchor.sum()
        if reduction == "sum":
            return total * world  # DDP averages gradients over ranks
        num_valid = distributed.all_reduce_sum(valid.sum()) if use_dist else valid.sum()
        # Scaled so that DDP's gradient average equals the gradient of the global-batch mean.
        return total * (world / num_valid.clamp(min=1).to(total.dtype))
