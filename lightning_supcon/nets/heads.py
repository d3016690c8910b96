"""The projection head that maps encoder features to the unit hypersphere where the contrastive loss acts.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362 (Sec. 3.1)
- [1] Chen et al., SimCLR, ICML 2020, https://arxiv.org/abs/2002.05709 (Sec. 4.2)
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from lightning_supcon.utils.checks import check_positive_integers
from lightning_supcon.utils.numerics import l2_normalize

HeadKind = Literal["mlp", "linear"]
_KINDS = ("mlp", "linear")


class ProjectionHead(nn.Module):
    """Projection network ``Proj(.)`` of [0]: an MLP (or one linear layer) followed by L2 normalisation.

    The paper's head is one hidden layer of the encoder's width, ReLU, and a 128-d output; it is discarded after
    pre-training and the classifier is trained on the encoder's features.

    Args:
        in_dim: Size of the encoder features.
        out_dim: Size of the projection.
        hidden_dim: Width of the hidden layer of the MLP; ``None`` means ``in_dim``. Ignored for ``"linear"``.
        kind: ``"mlp"``: ``Linear(in_dim, hidden_dim) -> ReLU -> Linear(hidden_dim, out_dim)``;
            ``"linear"``: ``Linear(in_dim, out_dim)``.

    Shape:
        - input: ``(..., in_dim)``.
        - output: ``(..., out_dim)``, of unit L2 norm along the last dim, in the input's dtype. The norm is taken
          in at least float32, so a zero projection gives zeros, not NaN, in float16 too.

    Raises:
        ValueError: For an unknown ``kind`` or a size that is not positive.

    Example:
        >>> import torch
        >>> head = ProjectionHead(in_dim=512, out_dim=128)
        >>> z = head(torch.randn(4, 512))
        >>> z.shape
        torch.Size([4, 128])
        >>> torch.allclose(z.norm(dim=-1), torch.ones(4))
        True
        >>> ProjectionHead(in_dim=512, kind="linear").net
        Linear(in_features=512, out_features=128, bias=True)
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 128,
        hidden_dim: int | None = None,
        kind: HeadKind = "mlp",
    ) -> None:
        super().__init__()
        if kind not in _KINDS:
            raise ValueError(f"Expected argument `kind` to be one of {_KINDS}, but got {kind!r}")
        hidden_dim = in_dim if hidden_dim is None else hidden_dim
        check_positive_integers(in_dim=in_dim, out_dim=out_dim, hidden_dim=hidden_dim)
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.kind = kind
        self.net: nn.Module
        if kind == "mlp":
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden_dim),
                nn.ReLU(inplace=True),
                nn.Linear(hidden_dim, out_dim),
            )
        else:
            self.net = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Project ``x`` of shape ``(..., in_dim)`` to unit vectors of shape ``(..., out_dim)``."""
        return l2_normalize(self.net(x), dim=-1)
