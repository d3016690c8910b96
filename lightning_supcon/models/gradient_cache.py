"""Gradient caching: a contrast set larger than the activations one device can hold, with the exact gradient.

- [0] Gao et al., Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup, RepL4NLP 2021,
  https://arxiv.org/abs/2101.06983
- [1] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362

A contrastive loss depends on the network only through the representations of the batch. [0] therefore (1) embeds
the batch in micro-batches without keeping the activations, (2) computes the loss and its gradient with respect to
every representation on the whole set, and (3) runs each micro-batch again with its graph and back-propagates the
cached representation gradient into the network, one micro-batch at a time: the peak activation memory is one
micro-batch's, the gradient the full batch's.

:func:`cached_forward` does exactly this with PyTorch's non-reentrant activation checkpointing, one checkpoint per
micro-batch: the forward keeps only each micro-batch's outputs (step 1); the caller's loss and its ``backward()``
reach the outputs first (step 2: the autograd engine sums every use of an output, e.g. SupCon and a joint
cross-entropy, before going on) and then each checkpoint recomputes its micro-batch with the graph and
back-propagates into the parameters (step 3). Because the whole step stays one autograd graph behind one scalar,
the caller can keep Lightning's automatic optimisation: the precision plugin's loss scaling, gradient clipping,
schedulers and DDP's single gradient all-reduce (each parameter's gradient is complete only after the last
micro-batch, so DDP reduces once, with no ``no_sync``) work unchanged.

Two passes over the same micro-batch must compute the same function:

- **Random draws** (dropout, stochastic depth): the random-number state (CPU, and the inputs' CUDA device) is saved
  before each micro-batch's first pass and restored before its second, so both passes draw the same masks.
- **BatchNorm** in training mode normalises each micro-batch by its own statistics, in both passes (the step equals
  one that runs the network per micro-batch, not one over the whole batch). The running statistics, and every other
  buffer of ``modules``, are restored after the second pass, so they are updated exactly once per micro-batch. With
  synchronised BatchNorm under DDP each micro-batch is normalised over the same micro-batch of every rank, which
  needs the same number of micro-batches on every rank (equal per-device batches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


@contextmanager
def restored_buffers(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Put every buffer of ``modules`` (BatchNorm's running statistics and counter) back as it was on entry.

    Example:
        >>> norm = nn.BatchNorm1d(2)
        >>> with restored_buffers([norm]):
        ...     _ = norm(torch.randn(4, 2))
        >>> int(norm.num_batches_tracked), norm.running_mean.tolist()
        (0, [0.0, 0.0])
    """
    buffers = [b for module in modules for b in module.buffers()]
    saved = [b.detach().clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved, strict=True):
                buffer.copy_(value)


def cached_forward(
    fn: Callable[[Tensor], tuple[Tensor, ...]],
    inputs: Tensor,
    micro_batch: int,
    modules: Sequence[nn.Module] = (),
) -> tuple[Tensor, ...]:
    """``fn(inputs)`` computed in micro-batches of ``micro_batch`` rows, whose activations are recomputed in the
    backward pass one micro-batch at a time (gradient caching [0]).

    Args:
        fn: Maps a slice of ``inputs`` ``(m, ...)`` to a tuple of tensors with ``m`` rows each (e.g. features and
            projections); must be row-wise separable up to the BatchNorm and random-draw rules of this module.
        inputs: ``(n, ...)``; the last micro-batch may be smaller (a ragged ``n % micro_batch`` rows).
        micro_batch: Rows per forward pass, ``>= 1``.
        modules: The modules ``fn`` runs whose buffers its forward updates (BatchNorm): restored after the
            recomputation, so each micro-batch updates them once.

    Returns:
        The outputs of all micro-batches concatenated along dim 0, ``(n, ...)`` each, attached to the graph.

    Raises:
        ValueError: For ``micro_batch < 1``.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 2))
        >>> x = torch.randn(10, 3)
        >>> (out,) = cached_forward(lambda chunk: (net(chunk),), x, micro_batch=4, modules=[net])
        >>> out.shape
        torch.Size([10, 2])
        >>> out.square().sum().backward()  # each micro-batch recomputed with the same dropout masks
        >>> net[0].weight.grad.shape
        torch.Size([8, 3])
    """
    if micro_batch < 1:
        raise ValueError(f"Expected `micro_batch` >= 1 (samples per forward pass), but got {micro_batch}.")

    def contexts() -> tuple[AbstractContextManager[None], AbstractContextManager[None]]:
        return nullcontext(), restored_buffers(modules)  # (first pass, recomputation)

    parts = [
        checkpoint(fn, chunk, use_reentrant=False, preserve_rng_state=True, context_fn=contexts)
        for chunk in inputs.split(micro_batch)
    ]
    return tuple(torch.cat(outputs) for outputs in zip(*parts, strict=True))


def micro_batched(fn: Callable[[Tensor], Tensor], inputs: Tensor, micro_batch: int) -> Tensor:
    """``fn`` over ``inputs`` ``(n, ...)`` in slices of ``micro_batch`` rows, concatenated (for no-grad passes such
    as a momentum encoder's keys, whose peak memory then follows the micro-batch too).

    Example:
        >>> micro_batched(lambda x: 2 * x, torch.arange(5.0), 2).tolist()
        [0.0, 2.0, 4.0, 6.0, 8.0]
    """
    return torch.cat([fn(chunk) for chunk in inputs.split(micro_batch)])
