"""Supervised contrastive loss, functional form.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [1] Chen et al., SimCLR, ICML 2020, https://arxiv.org/abs/2002.05709 (the label-free special case)

With ``N = batch x views`` features ``z`` and ``s_ij = z_i . z_j / tau``, for each anchor ``i`` the positives
``P(i)`` are the other entries of its class and ``A(i)`` all entries but ``i``:

- ``summation="out"`` (Eq. 2):  ``l_i = -1/|P(i)| sum_{p in P(i)} log( exp(s_ip) / sum_{a in A(i)} exp(s_ia) )``
- ``summation="in"``  (Eq. 3):  ``l_i = -log( 1/|P(i)| sum_{p in P(i)} exp(s_ip) / sum_{a in A(i)} exp(s_ia) )``

``denominator`` and ``positives_cap`` follow the official TensorFlow implementation (google-research/supcon);
the weighted, multi-label, partially labelled and class-averaged variants are defined in
:mod:`~lightning_supcon.losses.dense` and :mod:`~lightning_supcon.losses.positives`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_supcon.losses.dense import dense_per_anchor
from lightning_supcon.losses.fused import fused_supcon_out
from lightning_supcon.losses.layout import check_inputs, view_major
from lightning_supcon.losses.options import ContrastMode, Denominator, Multilabel, Reduction, Summation, SupConOptions
from lightning_supcon.losses.positives import class_groups, multilabel_weights
from lightning_supcon.utils import distributed

__all__ = ["ContrastMode", "Denominator", "Multilabel", "Reduction", "Summation", "supcon_loss"]


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
    multilabel: Multilabel = "jaccard",
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
    options = SupConOptions(
        temperature=temperature,
        base_temperature=base_temperature,
        contrast_mode=contrast_mode,
        summation=summation,
        denominator=denominator,
        positives_cap=positives_cap,
        reduction=reduction,
        gather_distributed=gather_distributed,
        chunk_size=chunk_size,
        multilabel=multilabel,
    )
    return _supcon_loss(features, labels, mask, queue, queue_labels, options)


def _supcon_loss(
    features: Tensor,
    labels: Tensor | None,
    mask: Tensor | None,
    queue: Tensor | None,
    queue_labels: Tensor | None,
    options: SupConOptions,
) -> Tensor:
    """:func:`supcon_loss` with its options in a record, validated when it was built (``SupConLoss`` builds its own
    once, at construction); the inputs are still checked on every call."""
    check_inputs(features, labels, mask, options.positives_cap, queue, queue_labels)
    batch, num_views = features.shape[:2]
    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=features.device.type, enabled=False):
        z = features.reshape(batch, num_views, -1).to(dtype)  # (B, V, D)

        use_dist = options.gather_distributed and distributed.is_distributed()
        sizes = distributed.gather_sizes(batch, z.device) if use_dist else [batch]
        offset = sum(sizes[: distributed.rank()]) if use_dist else 0
        world = len(sizes)
        global_z = distributed.gather(z, sizes) if use_dist else z  # (B_global, V, D)
        global_batch = global_z.shape[0]
        if mask is not None and tuple(mask.shape) != (batch, global_batch):
            raise ValueError(f"Expected `mask` of shape ({batch}, {global_batch}), but got {tuple(mask.shape)}.")

        anchors, contrast, self_index, local_index = view_major(z, global_z, offset, options.contrast_mode)
        num_anchor_views = num_views if options.contrast_mode == "all" else 1

        multi_hot = labels is not None and labels.dim() == 2
        if options.denominator == "class_mean" and (mask is not None or multi_hot):
            raise ValueError("`denominator='class_mean'` averages over classes: give class labels (batch,), or none.")
        inv_temperature = 1.0 / options.temperature
        group = torch.arange(global_batch, device=z.device)  # SimCLR: every sample its own class
        if labels is not None:
            local_labels = labels.to(z.device) if multi_hot else labels.to(z.device).long()
            gathered = distributed.gather(local_labels, sizes) if use_dist else local_labels
            if not multi_hot:  # unknown labels (-1): a group of their own, unique in the global batch
                group = class_groups(gathered)

        queue_group = None
        if queue is not None:  # contrast-only entries after the batch; never a gradient into them
            contrast = torch.cat([contrast, queue.detach().reshape(queue.shape[0], -1).to(dtype)])
            if queue_labels is not None:
                queue_group = class_groups(queue_labels.to(z.device), first=global_batch)
            else:  # SimCLR: queue entries are nobody's positives
                queue_group = global_batch + torch.arange(queue.shape[0], device=z.device)

        fused = mask is None and not multi_hot and options.summation == "out" and options.positives_cap is None
        fused = fused and options.denominator in ("all", "class_mean")
        all_groups = group if queue_group is None else torch.cat([group, queue_group])
        group_index = torch.unique(all_groups, return_inverse=True)[1]  # in [0, n_groups)
        contrast_class = torch.cat([group_index[:global_batch].repeat(num_views), group_index[global_batch:]])
        if fused:
            per_anchor = fused_supcon_out(anchors, contrast, contrast_class, self_index, options)
            num_pos = torch.bincount(contrast_class)[contrast_class[self_index]] - 1
            valid = num_pos > 0
        else:
            # Sample-level positive weights (B, B_global) in [0, 1].
            if mask is not None:
                weight = mask.to(device=z.device, dtype=dtype)
            elif multi_hot:
                weight = multilabel_weights(gathered[local_index], gathered, options.multilabel, dtype)
                weight[torch.arange(batch), local_index] = 1.0  # a sample's own views, with or without labels
            else:
                weight = (group[local_index][:, None] == group[None, :]).to(dtype)
            queue_weight = None
            if queue_group is not None:
                queue_weight = (group[local_index][:, None] == queue_group[None, :]).to(dtype)
            per_anchor, valid = dense_per_anchor(
                anchors,
                contrast,
                self_index,
                weight,
                num_anchor_views,
                num_views,
                offset,
                inv_temperature,
                options.summation,
                options.denominator,
                options.positives_cap,
                queue_weight,
                contrast_class,
            )

        if options.base_temperature is not None:
            per_anchor = per_anchor * (options.temperature / options.base_temperature)

        if options.reduction == "none":
            per_view = per_anchor.reshape(num_anchor_views, batch)
            count = valid.reshape(num_anchor_views, batch).sum(0)
            return per_view.sum(0) / count.clamp(min=1)
        total = per_anchor.sum()
        if options.reduction == "sum":
            return total * world  # DDP averages gradients over ranks
        num_valid = distributed.all_reduce_sum(valid.sum()) if use_dist else valid.sum()
        # Scaled so that DDP's gradient average equals the gradient of the global-batch mean.
        return total * (world / num_valid.clamp(min=1).to(total.dtype))
