"""Batch normalisation over the global batch, on any device and any ``torch.distributed`` backend.

PyTorch's ``nn.SyncBatchNorm`` (what ``Trainer(sync_batchnorm=True)`` converts to) runs on GPUs only: on the CPU
it raises, and its kernels have no CPU implementation. :class:`GlobalBatchNorm` computes the same thing from
plain tensor operations and two collectives per layer, so it also runs on CPU processes (gloo), and the
claim that DDP with synchronised BatchNorm equals one process holding the global batch can be tested on any
machine. On GPUs, prefer ``sync_batchnorm: true`` (fused kernels); the result is the same.

In training mode the statistics are those of the union of all ranks' samples: each rank's count, mean and
variance are all-gathered and combined in float64 (Chan et al.'s pairwise formula, so large means do not cancel),
the batch is normalised by PyTorch's fused ``batch_norm`` with the global mean and biased variance, and the
running statistics are updated with the unbiased global variance, as ``nn.BatchNorm`` does for one process. The
backward pass all-reduces the two per-channel gradient sums (taken on inputs centred by the global mean, so large
means do not cancel there either), so after DDP averages the parameter gradients they
equal those of one process. Ranks may hold different numbers of samples. One all-gather forward and one
all-reduce backward per layer. In eval mode, or without a process group, it is ``nn.functional.batch_norm``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from lightning_supcon.utils.distributed import is_distributed


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm over the samples of all ranks, for inputs ``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)``, ...

    Same arguments, parameters, buffers and state-dict keys as ``nn.BatchNorm2d``; build it with
    :meth:`convert` from a model's BatchNorm layers.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> bn, ref = GlobalBatchNorm(3), nn.BatchNorm2d(3)
        >>> x = torch.randn(4, 3, 5, 5)
        >>> torch.allclose(bn(x), ref(x), atol=1e-6)  # one process: plain BatchNorm
        True
    """

    _original_class: type[_BatchNorm] = nn.BatchNorm2d  # what :meth:`revert` turns a layer back into

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"Expected an input of shape (N, C, ...), but got {input.dim()} dimensions")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(input)  # checks the input dimensions itself
        self._check_input_dim(input)
        if input.shape[1] != self.num_features:
            raise ValueError(f"Expected {self.num_features} channels, but got input of shape {tuple(input.shape)}")
        # Statistics in at least float32 (inputs may be bf16 or fp16 under autocast).
        x = input if input.dtype in (torch.float32, torch.float64) else input.float()
        out, mean, var, count = _GlobalBatchNormFunction.apply(x, self.weight, self.bias, self.eps)
        if self.track_running_stats:  # with the unbiased variance, as nn.BatchNorm
            self._update_running_stats(mean, var * (count / (count - 1)))
        return out.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, unbiased_var: Tensor) -> None:
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """Replace every BatchNorm layer of ``module`` (``nn.BatchNorm1d/2d/3d``, ``nn.SyncBatchNorm``) by a
        :class:`GlobalBatchNorm` that shares its parameters and buffers; :meth:`revert` undoes it.

        Args:
            module: A model, or a single BatchNorm layer (then the new layer is returned).

        Returns:
            ``module`` with its BatchNorm layers replaced (the same object unless ``module`` is one).

        Example:
            >>> model = GlobalBatchNorm.convert(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8)))
            >>> type(model[1]).__name__, type(GlobalBatchNorm.revert(model)[1]).__name__
            ('GlobalBatchNorm', 'BatchNorm1d')
        """
        if isinstance(module, _BatchNorm) and not isinstance(module, cls):
            new = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            _move_state(module, new)
            new._original_class = type(module)
            return new
        for name, child in module.named_children():
            module.add_module(name, cls.convert(child))
        return module

    @classmethod
    def revert(cls, module: nn.Module) -> nn.Module:
        """Turn the :class:`GlobalBatchNorm` layers made by :meth:`convert` back into their original classes."""
        if isinstance(module, cls):
            new = module._original_class(
                module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
            )
            _move_state(module, new)
            return new
        for name, child in module.named_children():
            module.add_module(name, cls.revert(child))
        return module


class _GlobalBatchNormFunction(torch.autograd.Function):
    """Training-mode BatchNorm over all ranks: one all-gather of the ranks' counts, means and variances forward,
    one all-reduce of the two gradient sums backward; the elementwise work is PyTorch's fused ``batch_norm``
    forward and a four-term backward.

    The gradients are those of the sum of all ranks' losses (each rank's output gradient already is, with the
    project's gather), so after DDP averages them they are those of one process holding the global batch.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
    ) -> tuple[Tensor, Tensor, Tensor, float]:
        local_count = x.numel() // x.shape[1]
        # Per-channel mean and biased variance in one fused pass (3x faster than torch.var_mean on the CPU).
        local_mean, local_var = torch.batch_norm_update_stats(x, None, None, 0.0)
        # (W, 2C + 1) in float64: counts past 2**24 stay exact (a 6144-image batch at 112 x 112 has 1.5e8 values
        # per channel) and the ranks' statistics combine without cancellation (Chan et al.'s pairwise formula).
        count_column = torch.full((1,), local_count, dtype=torch.float64, device=x.device)
        local = torch.cat([local_mean.double(), local_var.double(), count_column])
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local)
        stats = torch.stack(parts)
        counts = stats[:, -1:]  # (W, 1)
        count = float(counts.sum())
        if count < 2:
            raise ValueError(f"Expected more than 1 value per channel over all ranks, but got {int(count)}")
        channels = x.shape[1]
        means, variances = stats[:, :channels], stats[:, channels:-1]
        has_data = counts > 0  # an empty rank contributes nothing (its mean and variance are NaN)
        means, variances = torch.where(has_data, means, 0.0), torch.where(has_data, variances, 0.0)
        mean = (counts * means).sum(0) / count
        var = (counts * (variances + (means - mean).square())).sum(0) / count  # biased: it normalises
        mean64, mean, var = mean, mean.to(x.dtype), var.to(x.dtype)
        mean_low = (mean64 - mean.double()).to(x.dtype)  # what rounding the mean to x's dtype lost
        out = F.batch_norm(x, mean, var, weight, bias, training=False, momentum=0.0, eps=eps)
        invstd = torch.rsqrt(var + eps)
        ctx.save_for_backward(x, weight, mean, mean_low, invstd)
        ctx.count = count
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var, count

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(  # type: ignore[override]
        ctx: Any, grad_out: Tensor, *_: Any
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        x, weight, mean, mean_low, invstd = ctx.saved_tensors
        dims = [0, *range(2, x.dim())]
        shape = (1, -1, *([1] * (x.dim() - 2)))
        # Per channel, on inputs centred by the global mean: sum(dy * (x - mean)), not sum(dy * x) - mean * sum(dy),
        # which cancels when |mean| >> std (float32 gradients at activation means of 100-1000). Centred on every
        # rank with the same global mean, the per-rank sums add up to the global one. The mean is the float64 one,
        # in two parts: x - mean is exact for x near the mean, and the small rest (mean_low) is applied per channel.
        centred = x - mean.view(shape)
        sum_dy = grad_out.sum(dims)
        sum_dy_xhat = ((grad_out * centred).sum(dims) - mean_low * sum_dy) * invstd
        grad_x = None
        if ctx.needs_input_grad[0]:
            # The statistics depend on every rank's samples: their gradient terms sum over ranks.
            sums = torch.cat([sum_dy, sum_dy_xhat]).double()
            dist.all_reduce(sums)
            mean_dy, mean_dy_xhat = (sums / ctx.count).to(x.dtype).view(2, -1).unbind()
            # grad_x = (dy - mean_dy - xhat * mean_dy_xhat) * invstd * w = dy * a + centred * b + c
            a = invstd if weight is None else invstd * weight
            b = -a * invstd * mean_dy_xhat
            c = -a * mean_dy - b * mean_low
            grad_x = torch.addcmul(torch.addcmul(c.view(shape), grad_out, a.view(shape)), centred, b.view(shape))
        grad_weight = sum_dy_xhat if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = sum_dy if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None


def _move_state(source: _BatchNorm, target: _BatchNorm) -> None:
    """Give ``target`` the very parameters and buffers of ``source`` (an optimiser holding them keeps working)."""
    if source.affine:
        target.weight, target.bias = source.weight, source.bias
    target.running_mean = source.running_mean
    target.running_var = source.running_var
    target.num_batches_tracked = source.num_batches_tracked
    target.train(source.training)
    qconfig: Any = getattr(source, "qconfig", None)
    if qconfig is not None:
        target.qconfig = qconfig
