"""The SupCon loss as a plain ``torch.nn.Module`` (no Lightning needed).

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [1] Chen et al., SimCLR, ICML 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_supcon.losses.functional import _supcon_loss
from lightning_supcon.losses.options import ContrastMode, Denominator, Reduction, Summation, check_options


class SupConLoss(nn.Module):
    """Supervised contrastive loss, Eq. 2 (``L_out``, default) or Eq. 3 (``L_in``) of [0].

    Features of ``views`` augmentations of each sample are contrasted with each other: for an anchor, the other
    entries of its class are positives, all other entries form the softmax denominator. Without labels and mask it
    is SimCLR's NT-Xent loss [1] (each sample its own class).

    The default path (``summation="out"``, ``denominator="all"``, no cap, labels or nothing) runs a fused
    forward/backward that holds one N x N matrix (N = batch x views); ``chunk_size`` bounds it to
    ``chunk_size x N`` for very large global batches. All other variants use explicit masks.

    Args:
        temperature: Softmax temperature tau, > 0. The paper uses 0.1.
        base_temperature: The loss is multiplied by ``temperature / base_temperature``; ``None`` leaves Eq. 2 as
            written. The widely used PyTorch reference code (HobbitLong/SupContrast) is ``base_temperature=0.07``;
            the TensorFlow reference's ``scale_by_temperature=True`` is ``base_temperature=1.0``.
        contrast_mode: ``"all"``: every view is an anchor; ``"one"``: only view 0 of each sample is.
        summation: ``"out"``: Eq. 2, the mean over positives outside the log; ``"in"``: Eq. 3, inside.
        denominator: As in the TensorFlow reference: ``"all"``: every entry but the anchor;
            ``"one_positive"``: the negatives plus only the positive of the numerator; ``"only_negatives"``.
        positives_cap: Keep at most this many positives besides the anchor's own views: ``positives_cap / views``
            other samples, the first ones by batch position; capped-out positives leave the denominator too.
            Must be a multiple of the number of views; ``None`` means no cap.
        reduction: ``"mean"`` over anchors that have at least one positive (0, still attached to the graph, when
            none has); ``"sum"``; ``"none"``: per-sample ``(batch,)``, the mean over the sample's anchor views with
            positives (0 where none).
        gather_distributed: When ``torch.distributed`` runs with world size > 1, contrast local anchors with the
            features and labels of all ranks (the default: the loss of the global batch, as in [0]; no effect in one
            process). The returned value is scaled so that after DDP averages gradients
            they equal those of one process holding the global batch (the mean over valid anchors of all ranks);
            average the value over ranks (``sync_dist=True``) to log the global loss.
        chunk_size: Anchors per block in the fused path: memory ``chunk_size x N`` instead of ``N x N``, at the
            price of recomputing the logits in the backward pass.

    Shape:
        - features: ``(batch, views, ...)``; trailing dims are flattened. Usually L2-normalised.
        - labels: ``(batch,)`` integers, optional.
        - queue: ``(queue_size, ...)`` features of earlier batches (a memory queue, as in MoCo), contrasted with
          every anchor but never anchors themselves and never given a gradient; ``queue_labels``
          ``(queue_size,)`` their classes, required exactly when ``labels`` are given (without supervision the
          queue holds negatives only). Not with ``mask`` or ``positives_cap``.
        - mask: ``(batch, batch)`` (``(batch, global_batch)`` when gathering), 0/1, ``mask[i, j] = 1`` when sample
          ``j`` is a positive of sample ``i``; may be asymmetric. Exclusive with ``labels``.
        - output: a scalar, or ``(batch,)`` for ``reduction="none"``. Computed in float32 (float64 for float64
          input), also under ``torch.autocast``.

    Raises:
        ValueError: For bad options here, or bad inputs in ``forward``.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> _ = torch.manual_seed(0)
        >>> features = F.normalize(torch.randn(8, 2, 16), dim=-1)
        >>> labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
        >>> SupConLoss(temperature=0.1)(features, labels)
        tensor(4.6211)
        >>> SupConLoss(temperature=0.1)(features)  # SimCLR
        tensor(4.9218)
        >>> SupConLoss(reduction="none")(features, labels).shape
        torch.Size([8])
    """

    def __init__(
        self,
        temperature: float = 0.1,
        base_temperature: float | None = None,
        contrast_mode: ContrastMode = "all",
        summation: Summation = "out",
        denominator: Denominator = "all",
        positives_cap: int | None = None,
        reduction: Reduction = "mean",
        gather_distributed: bool = True,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.base_temperature = base_temperature
        self.contrast_mode: ContrastMode = contrast_mode
        self.summation: Summation = summation
        self.denominator: Denominator = denominator
        self.positives_cap = positives_cap
        self.reduction: Reduction = reduction
        self.gather_distributed = gather_distributed
        self.chunk_size = chunk_size
        options = self.init_args()
        del options["gather_distributed"]
        check_options(**options)  # once here; forward runs the checked options

    def forward(
        self,
        features: Tensor,
        labels: Tensor | None = None,
        mask: Tensor | None = None,
        queue: Tensor | None = None,
        queue_labels: Tensor | None = None,
        gather_distributed: bool | None = None,
    ) -> Tensor:
        """Compute the loss; see the class docstring for shapes.

        ``gather_distributed`` overrides the module's setting for this call (e.g. ``False`` for evaluation batches,
        which the ranks may run in different numbers, so they must hold no collective).
        """
        return _supcon_loss(
            features,
            labels,
            mask,
            self.temperature,
            self.base_temperature,
            self.contrast_mode,
            self.summation,
            self.denominator,
            self.positives_cap,
            self.reduction,
            self.gather_distributed if gather_distributed is None else gather_distributed,
            self.chunk_size,
            queue,
            queue_labels,
        )

    def init_args(self) -> dict[str, Any]:
        """The options this loss was built with (plain data, e.g. for a checkpoint's hyperparameters)."""
        return {
            "temperature": self.temperature,
            "base_temperature": self.base_temperature,
            "contrast_mode": self.contrast_mode,
            "summation": self.summation,
            "denominator": self.denominator,
            "positives_cap": self.positives_cap,
            "reduction": self.reduction,
            "gather_distributed": self.gather_distributed,
            "chunk_size": self.chunk_size,
        }

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, base_temperature={self.base_temperature}, "
            f"contrast_mode={self.contrast_mode!r}, summation={self.summation!r}, "
            f"denominator={self.denominator!r}, positives_cap={self.positives_cap}, "
            f"reduction={self.reduction!r}, gather_distributed={self.gather_distributed}"
        )
