"""Batch normalisation over the global batch, on any device and any ``torch.distributed`` backend.

PyTorch's ``nn.SyncBatchNorm`` (what ``Trainer(sync_batchnorm=True)`` converts to) runs on GPUs only: on the CPU
it raises, and its kernels have no CPU implementation. :class:`GlobalBatchNorm` computes the same thing from
plain tensor operations and two differentiable all-reduces, so it also runs on CPU processes (gloo), and the
claim that DDP with synchronised BatchNorm equals one process holding the global batch can be tested on any
machine. On GPUs, prefer ``sync_batchnorm: true`` (fused kernels); the result is the same.

In training mode the statistics are those of the union of all ranks' samples: the mean first, then the biased
variance around it (two passes, so large means do not cancel), and the running statistics are updated with the
unbiased global variance, as ``nn.BatchNorm`` does for one process. The backward pass sums the gradient of the
statistics over ranks, so after DDP averages the parameter gradients they equal those of one process. Ranks may
hold different numbers of samples. In eval mode, or without a process group, it is ``nn.functional.batch_norm``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from lightning_supcon.utils.distributed import all_reduce_sum_with_grad, is_distributed


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
        self._check_input_dim(input)
        if not (self.training and is_distributed()):
            return super().forward(input)
        if input.shape[1] != self.num_features:
            raise ValueError(f"Expected {self.num_features} channels, but got input of shape {tuple(input.shape)}")
        # Statistics in at least float32 (inputs may be bf16 or fp16 under autocast).
        x = input if input.dtype in (torch.float32, torch.float64) else input.float()
        dims = [0, *range(2, x.dim())]
        shape = (1, -1, *([1] * (x.dim() - 2)))
        local_count = x.numel() // x.shape[1]
        # One collective for the sums and the count, (C + 1,) in float64: counts past 2**24 stay exact (a
        # 6144-image batch at 112 x 112 has 1.5e8 values per channel), and the vectors are small.
        count_and_sum = all_reduce_sum_with_grad(
            torch.cat([x.sum(dims).double(), x.new_full((1,), float(local_count), dtype=torch.float64)])
        )
        count = count_and_sum[-1].detach()
        if count < 2:
            raise ValueError(f"Expected more than 1 value per channel over all ranks, but got {int(count)}")
        mean = (count_and_sum[:-1] / count).to(x.dtype)
        centred = x - mean.view(shape)
        # The biased variance normalises; the unbiased one goes into the running statistics.
        var = (all_reduce_sum_with_grad(centred.square().sum(dims).double()) / count).to(x.dtype)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * float(count / (count - 1)))
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
