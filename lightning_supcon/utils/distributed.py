"""Collectives for contrasting against the global batch, with exact gradients.

``torch.distributed.nn.functional.all_gather`` (used by ``LightningModule.all_gather(sync_grads=True)``) returns
wrong gradients on the gloo backend when the gradient flowing into it is non-contiguous, and older gathers in
popular libraries returned only the local slice of the gradient (wrong by the world size). The gather here makes
its backward explicit: the incoming gradient is made contiguous, summed over ranks and each rank keeps its own
slice. Ranks may hold different batch sizes (a ragged last batch): tensors are padded to the largest size for the
collective and trimmed afterwards.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is initialised with more than one process.

    Example:
        >>> is_distributed()
        False
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """The number of processes, 1 when ``torch.distributed`` is not initialised."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's global rank, 0 when ``torch.distributed`` is not initialised."""
    return dist.get_rank() if is_distributed() else 0


def gather_sizes(size: int, device: torch.device) -> list[int]:
    """All-gather one integer (a local batch size) from every rank.

    Args:
        size: This rank's value.
        device: Where the collective runs (a CUDA device for NCCL, the CPU for gloo).

    Returns:
        The values of all ranks, in rank order.
    """
    if not is_distributed():
        return [size]
    local = torch.tensor([size], dtype=torch.long, device=device)
    out = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(out, local)
    return [int(t.item()) for t in out]


def _padded_all_gather(tensor: Tensor, sizes: list[int]) -> Tensor:
    """Concatenate ``tensor`` (first dim ``sizes[rank]``) from all ranks along dim 0, no autograd."""
    x = tensor.contiguous()
    max_size = max(sizes)
    if x.shape[0] < max_size:
        pad = x.new_zeros((max_size - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad])
    out = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(out, x)
    return torch.cat([o[:s] for o, s in zip(out, sizes, strict=True)])


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward returns this rank's slice of the rank-summed gradient."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, sizes: list[int]) -> Tensor:
        ctx.sizes = sizes
        ctx.rank = dist.get_rank()
        return _padded_all_gather(tensor, sizes)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        # A fresh contiguous buffer: gloo mishandles strided gradients and all_reduce works in place.
        grad = grad_output.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def gather(tensor: Tensor, sizes: list[int] | None = None) -> Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0, differentiably when it requires grad.

    The backward pass sums the incoming gradient over ranks and returns this rank's slice, so after DDP
    averages the parameter gradients they equal those of one process holding the whole global batch (given a
    loss scaled by the world size, as :func:`~lightning_supcon.losses.supcon_loss` does).

    Args:
        tensor: ``(n_rank, ...)``; the trailing shape must agree on every rank, ``n_rank`` may differ.
        sizes: The first-dim size on every rank, if already known (saves one collective).

    Returns:
        ``(sum(sizes), ...)``: rank 0's rows first. Without an initialised process group, ``tensor`` itself.
    """
    if not is_distributed():
        return tensor
    if sizes is None:
        sizes = gather_sizes(tensor.shape[0], tensor.device)
    if tensor.requires_grad:
        out: Tensor = _GatherWithGrad.apply(tensor, sizes)
        return out
    return _padded_all_gather(tensor, sizes)


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum a tensor over ranks (a copy, no autograd); identity without a process group."""
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
