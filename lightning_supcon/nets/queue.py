"""A first-in first-out memory of past projections and their labels, and the momentum encoder that fills it (MoCo).

- [0] He et al., Momentum Contrast, CVPR 2020, https://arxiv.org/abs/1911.05722
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Queue:
    """The settings of a memory queue, as one record (``queue:`` in a config; ``None`` where a module has none).

    Args:
        size: Entries kept: the projections (and labels) of the last ``size`` training views, contrasted with every
            anchor besides the batch (for small batches); they carry no gradient.
        momentum: Fill the queue from a momentum encoder (MoCo [0], e.g. 0.999), an exponential moving average of
            the encoder updated after each step; ``None``: enqueue the batch's detached projections.

    Raises:
        ValueError: For ``size < 1`` or a ``momentum`` outside ``[0, 1)``.

    Example:
        >>> Queue(size=4096, momentum=0.99)
        Queue(size=4096, momentum=0.99)
    """

    size: int
    momentum: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and self.size >= 1):
            raise ValueError(f"Expected `queue.size` >= 1 (leave `queue` out for none), but got {self.size}.")
        if self.momentum is not None and not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"Expected `queue.momentum` in [0, 1) or None, but got {self.momentum}.")


class MemoryQueue(nn.Module):
    """A ring buffer of ``size`` feature vectors and their integer labels, kept as buffers (so checkpoints hold it).

    Args:
        size: Number of entries.
        dim: Size of each feature vector.

    Example:
        >>> queue = MemoryQueue(size=3, dim=2)
        >>> queue.push(torch.ones(2, 2), torch.tensor([4, 5]))
        >>> queue.push(torch.zeros(2, 2), torch.tensor([6, 7]))
        >>> features, labels = queue.entries()
        >>> labels.tolist(), int(queue.ptr)
        ([7, 5, 6], 1)
    """

    features: Tensor
    labels: Tensor
    ptr: Tensor
    filled: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"Expected `size` and `dim` >= 1, but got size={size}, dim={dim}.")
        self.size = size
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("labels", torch.zeros(size, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def entries(self) -> tuple[Tensor | None, Tensor | None]:
        """The filled entries ``(n, dim)`` and their labels ``(n,)``; ``(None, None)`` while empty."""
        n = int(self.filled)
        if n == 0:
            return None, None
        return self.features[:n], self.labels[:n]

    @torch.no_grad()
    def push(self, features: Tensor, labels: Tensor) -> None:
        """Write ``features`` ``(n, dim)`` and ``labels`` ``(n,)`` over the oldest entries."""
        features, labels = features[-self.size :], labels[-self.size :]  # only the newest fit
        n = features.shape[0]
        index = (self.ptr + torch.arange(n, device=self.ptr.device)) % self.size
        self.features[index] = features.detach().to(self.features.dtype)
        self.labels[index] = labels.to(self.labels.dtype)
        self.ptr.copy_((self.ptr + n) % self.size)
        self.filled.copy_(torch.clamp(self.filled + n, max=self.size))


class MomentumEncoder(nn.Module):
    """A frozen copy of an encoder and its head, moved towards them by an exponential moving average (MoCo [0]).

    It encodes the keys a :class:`MemoryQueue` holds, so the queue fills with slowly changing features.

    Args:
        encoder: The online encoder (copied).
        head: The online projection head (copied).
        momentum: EMA factor in ``[0, 1)``: ``ema <- momentum * ema + (1 - momentum) * online`` after each step.

    Raises:
        ValueError: For a momentum outside ``[0, 1)``.

    Example:
        >>> online = nn.Linear(2, 2)
        >>> ema = MomentumEncoder(online, nn.Identity(), momentum=0.5)
        >>> with torch.no_grad():
        ...     _ = online.weight.add_(1.0)
        >>> ema.update(online, nn.Identity())
        >>> bool(torch.allclose(ema.encoder.weight, online.weight - 0.5))
        True
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, momentum: float) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Expected `momentum` in [0, 1), but got {momentum}.")
        self.momentum = momentum
        self.encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.head = copy.deepcopy(head).requires_grad_(False)

    @torch.no_grad()
    def forward(self, inputs: Tensor) -> Tensor:
        """Keys ``(batch, projection_dim)`` of inputs ``(batch, *input_shape)``."""
        keys: Tensor = self.head(self.encoder(inputs))
        return keys

    @torch.no_grad()
    def update(self, encoder: nn.Module, head: nn.Module) -> None:
        """Move the parameters towards the online ``encoder`` and ``head``; copy their buffers (BN statistics)."""
        for online, ema in ((encoder, self.encoder), (head, self.head)):
            for p, p_ema in zip(online.parameters(), ema.parameters(), strict=True):
                p_ema.mul_(self.momentum).add_(p.detach(), alpha=1.0 - self.momentum)
            for b, b_ema in zip(online.buffers(), ema.buffers(), strict=True):
                b_ema.copy_(b)
