"""The SupCon loss as a plain ``torch.nn.Module`` (no Lightning needed).

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [1] Chen et al., SimCLR, ICML 2020, https://arxiv.org/abs/2002.05709
- [2] HobbitLong/SupContrast (the PyTorch reference code): a float ``mask`` weights the positive pairs
- [3] Zhu et al., Balanced Contrastive Learning for Long-Tailed Visual Recognition, CVPR 2022,
  https://arxiv.org/abs/2207.09052 (class-averaging, ``denominator="class_mean"``)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor, nn

from lightning_supcon.losses.functional import _supcon_loss
from lightning_supcon.losses.options import ContrastMode, Denominator, Multilabel, Reduction, Summation, SupConOptions

_OPTIONS = frozenset(field.name for field in dataclasses.fields(SupConOptions))


class SupConLoss(nn.Module):
    """Supervised contrastive loss, Eq. 2 (``L_out``, default) or Eq. 3 (``L_in``) of [0].

    Features of ``views`` augmentations of each sample are contrasted with each other: for an anchor, the other
    entries of its class are positives, all other entries form the softmax denominator. Without labels and mask it
    is SimCLR's NT-Xent loss [1] (each sample its own class).

    Supervision, in ``forward``: class ``labels`` ``(batch,)``, where ``-1`` marks an unknown class (that sample's
    positives are only its own other views, SimCLR for it, and it is a negative for every other sample: partially
    labelled batches); multi-hot ``labels`` ``(batch, num_classes)``, where a pair's positive weight is the Jaccard
    overlap of the two label sets or 1 when they share a label (``multilabel``), and a sample without labels has
    only its own views as positives; a ``mask`` of positive weights in ``[0, 1]`` [2]; or nothing (SimCLR). With
    weights ``w_ij`` (a binary mask or class labels: ``w_ij = 1`` on positives), ``L_out`` is
    ``l_i = -sum_j w_ij log p_ij / sum_j w_ij`` and ``L_in`` is ``l_i = -log( sum_j w_ij p_ij / sum_j w_ij )``,
    ``p_ij`` keeping its denominator; entries of weight 0 are the negatives; an anchor whose weights sum to 0 has
    no positive.

    The default path (``summation="out"``, ``denominator="all"`` or ``"class_mean"``, no cap, class labels,
    unknown ones included, or nothing) runs a fused forward/backward that holds one N x N matrix
    (N = batch x views); ``chunk_size`` bounds it to ``chunk_size x N`` for very large global batches. All other
    variants (``mask``, multi-hot labels, ``summation="in"``, a cap, the other denominators) use explicit masks.

    Args:
        temperature: Softmax temperature tau, > 0. The paper uses 0.1.
        base_temperature: The loss is multiplied by ``temperature / base_temperature``; ``None`` leaves Eq. 2 as
            written. The widely used PyTorch reference code (HobbitLong/SupContrast) is ``base_temperature=0.07``;
            the TensorFlow reference's ``scale_by_temperature=True`` is ``base_temperature=1.0``.
        contrast_mode: ``"all"``: every view is an anchor; ``"one"``: only view 0 of each sample is.
        summation: ``"out"``: Eq. 2, the mean over positives outside the log; ``"in"``: Eq. 3, inside.
        denominator: As in the TensorFlow reference: ``"all"``: every entry but the anchor;
            ``"one_positive"``: the negatives plus only the positive of the numerator; ``"only_negatives"``;
            ``"class_mean"`` [3]: every entry but the anchor, each class contributing the mean, not the sum, of its
            exponentials (its count: its entries in the contrast set, views included, the anchor excluded), for
            long-tailed classes. Needs class labels (or none); not with ``positives_cap``.
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
        multilabel: The positive weight of two samples with multi-hot labels: ``"jaccard"``, the Jaccard overlap
            ``|a & b| / |a | b|`` of their label sets; ``"any"``: 1 when they share any label, else 0.

    Attributes:
        options: The options above as one validated :class:`~lightning_supcon.losses.options.SupConOptions` record.
            Each also reads as an attribute (``loss.temperature``); setting one (``loss.temperature = 0.2``)
            replaces the record by a validated copy.

    Shape:
        - features: ``(batch, views, ...)``; trailing dims are flattened. Usually L2-normalised.
        - labels: ``(batch,)`` integers ``>= -1`` (``-1``: unknown), or multi-hot ``(batch, num_classes)`` of 0/1
          (any dtype); optional.
        - queue: ``(queue_size, ...)`` features of earlier batches (a memory queue, as in MoCo), contrasted with
          every anchor but never anchors themselves and never given a gradient; ``queue_labels``
          ``(queue_size,)`` their classes, required exactly when ``labels`` are given (without supervision the
          queue holds negatives only). Not with ``mask`` or ``positives_cap``.
        - mask: ``(batch, batch)`` (``(batch, global_batch)`` when gathering), weights in [0, 1]: ``mask[i, j] > 0``
          when sample ``j`` is a positive of sample ``i``, with that weight; ``mask[i, i]`` weighs the anchor's own
          other views. May be asymmetric. Exclusive with ``labels``.
        - output: a scalar, or ``(batch,)`` for ``reduction="none"``. Computed in float32 (float64 for float64
          input), also under ``torch.autocast``.

    Raises:
        ValueError: For bad options here, or bad inputs in ``forward`` (e.g. mask weights outside [0, 1] or NaN,
            labels below -1, multi-hot labels that are not 0/1).

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
        >>> SupConLoss()(features, torch.tensor([0, 1, -1, -1, 0, 1, 2, 2]))  # two samples of unknown class
        tensor(4.9201)
        >>> multi_hot = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]]).repeat(2, 1)
        >>> SupConLoss(multilabel="jaccard")(features, multi_hot)
        tensor(4.9571)
        >>> SupConLoss(multilabel="any")(features, multi_hot)
        tensor(5.0761)
        >>> SupConLoss(denominator="class_mean")(features, labels)
        tensor(3.3042)
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
        multilabel: Multilabel = "jaccard",
    ) -> None:
        super().__init__()
        self.options = SupConOptions(  # validated once here; forward runs the checked options
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

    def __getattr__(self, name: str) -> Any:
        """An option read as an attribute (``loss.temperature``) comes from :attr:`options`."""
        options = self.__dict__.get("options")
        if name in _OPTIONS and options is not None:
            return getattr(options, name)
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        """An option set as an attribute (``loss.temperature = 0.2``) replaces :attr:`options` by a validated copy."""
        if name in _OPTIONS:
            self.options = dataclasses.replace(self.options, **{name: value})
        else:
            super().__setattr__(name, value)

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
        options = self.options
        if gather_distributed is not None and gather_distributed != options.gather_distributed:
            options = dataclasses.replace(options, gather_distributed=gather_distributed)
        return _supcon_loss(features, labels, mask, queue, queue_labels, options)

    def init_args(self) -> dict[str, Any]:
        """The options this loss was built with (plain data, e.g. for a checkpoint's hyperparameters)."""
        return dataclasses.asdict(self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={value!r}" for name, value in self.init_args().items())
