"""LARS: SGD with momentum and a layer-wise learning rate scaled by the ratio of weight norm to update norm.

- [0] You et al., Large Batch Training of Convolutional Networks, 2017, https://arxiv.org/abs/1708.03888 (Alg. 1)
- [1] Chen et al., SimCLR, ICML 2020, https://arxiv.org/abs/2002.05709 (App. B.1: LARS, biases and batch-norm
  parameters excluded from adaptation and weight decay)
- [2] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362 (App. B)

For every parameter tensor ``w`` with gradient ``g``, learning rate ``lr``, momentum ``m``, weight decay ``beta``
and trust coefficient ``eta``:

- adapted tensors: ``u = g + beta * w`` and ``u <- eta * ||w|| / (||u|| + eps) * u``; when ``||w||`` or ``||u||``
  is 0 the ratio is 1;
- excluded tensors: ``u = g`` (neither adaptation nor weight decay);
- then ``v <- m * v + lr * u`` and ``w <- w - v`` (the buffer starts at ``lr * u``).

The learning rate sits inside the momentum buffer, as in Alg. 1 of [0] and the SimCLR code; with a constant
learning rate this equals the ``v <- m * v + u``, ``w <- w - lr * v`` form.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from lightning_supcon.utils.numerics import compute_dtype


class LARS(Optimizer):
    """Layer-wise Adaptive Rate Scaling of [0], in the form used by SimCLR [1] and SupCon [2].

    Exclusion is decided per parameter group by the key ``lars_exclude``: ``True`` excludes every tensor of the
    group, ``False`` none, and ``None`` (the default) excludes the tensors with ``ndim <= 1``: biases and the
    scales and shifts of normalisation layers.

    Args:
        params: Parameters, or dicts defining parameter groups (which may set ``lars_exclude`` and any argument
            below).
        lr: Learning rate, >= 0.
        momentum: Momentum factor in ``[0, 1)``.
        weight_decay: L2 penalty ``beta`` of the adapted tensors, >= 0.
        trust_coefficient: ``eta`` of [0], > 0.
        eps: Added to the update norm in the trust ratio, >= 0.

    Raises:
        ValueError: For an argument out of range.

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[3.0, 4.0]]))
        ...     _ = layer.bias.zero_()
        >>> optimizer = LARS(layer.parameters(), lr=1.0, trust_coefficient=0.1)
        >>> layer(torch.tensor([[1.0, 0.0]])).sum().backward()
        >>> optimizer.step()  # weight: ratio 0.1 * 5 / 1 = 0.5; bias excluded: plain step of its gradient 1
        >>> layer.weight.data, layer.bias.data
        (tensor([[2.5000, 4.0000]]), tensor([-1.]))
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
    ) -> None:
        if lr < 0:
            raise ValueError(f"Expected argument `lr` to be >= 0, but got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"Expected argument `momentum` to be in [0, 1), but got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"Expected argument `weight_decay` to be >= 0, but got {weight_decay}")
        if not trust_coefficient > 0:
            raise ValueError(f"Expected argument `trust_coefficient` to be > 0, but got {trust_coefficient}")
        if eps < 0:
            raise ValueError(f"Expected argument `eps` to be >= 0, but got {eps}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "eps": eps,
            "lars_exclude": None,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Update the parameters once.

        Args:
            closure: Re-evaluates the model and returns the loss; optional.

        Returns:
            The loss returned by ``closure``, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise ValueError("Expected dense gradients, but got a sparse one; LARS supports dense only")
                exclude = group["lars_exclude"]
                if exclude is None:
                    exclude = param.ndim <= 1
                update = param.grad if exclude else self._adapted_update(param, group)
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = update.mul(lr)
                else:
                    state["momentum_buffer"].mul_(momentum).add_(update, alpha=lr)
                param.sub_(state["momentum_buffer"])
        return loss

    @staticmethod
    def _adapted_update(param: Tensor, group: dict[str, Any]) -> Tensor:
        """``eta * ||w|| / (||u|| + eps) * u`` with ``u = g + beta * w`` (ratio 1 where a norm is 0).

        The norms and the ratio are computed in at least float32: in float16 ``eps=1e-8`` is 0 and a norm can
        overflow, which made the ratio inf or NaN for half-precision parameters.
        """
        assert param.grad is not None
        update = param.grad.add(param, alpha=group["weight_decay"])
        dtype = compute_dtype(update.dtype)
        param_norm = torch.linalg.vector_norm(param, dtype=dtype)
        update_norm = torch.linalg.vector_norm(update, dtype=dtype)
        ratio = group["trust_coefficient"] * param_norm / (update_norm + group["eps"])
        ratio = torch.where((param_norm > 0) & (update_norm > 0), ratio, torch.ones_like(ratio))
        return update.to(dtype).mul(ratio).to(update.dtype)
