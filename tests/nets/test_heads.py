"""ProjectionHead: structure, unit-norm output, and values against a per-sample loop from the paper's definition."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from lightning_supcon.nets.heads import ProjectionHead


def _reference(head: ProjectionHead, x: Tensor) -> Tensor:
    """Per sample: z = W2 relu(W1 x + b1) + b2 (or W x + b), divided by its Euclidean norm."""
    layers = [m for m in head.modules() if isinstance(m, nn.Linear)]
    out = torch.empty(x.shape[0], head.out_dim, dtype=torch.float64)
    for n in range(x.shape[0]):
        h = [float(v) for v in x[n]]
        for i, layer in enumerate(layers):
            w, b = layer.weight.detach().double(), layer.bias.detach().double()
            h = [sum(float(w[o, j]) * h[j] for j in range(len(h))) + float(b[o]) for o in range(w.shape[0])]
            if i < len(layers) - 1:
                h = [max(v, 0.0) for v in h]
        norm = math.sqrt(sum(v * v for v in h))
        out[n] = torch.tensor([v / norm for v in h], dtype=torch.float64)
    return out


class TestProjectionHead:
    @pytest.mark.parametrize("kind", ["mlp", "linear"])
    @pytest.mark.parametrize(("in_dim", "out_dim", "hidden_dim"), [(8, 4, None), (6, 3, 5), (5, 7, 2)])
    def test_matches_reference(self, kind: str, in_dim: int, out_dim: int, hidden_dim: int | None) -> None:
        torch.manual_seed(0)
        head = ProjectionHead(in_dim, out_dim, hidden_dim=hidden_dim, kind=kind)  # type: ignore[arg-type]
        x = torch.randn(5, in_dim)
        with torch.no_grad():
            out = head(x)
        torch.testing.assert_close(out.double(), _reference(head, x), atol=1e-5, rtol=1e-5)

    def test_mlp_structure_default_hidden_is_in_dim(self) -> None:
        head = ProjectionHead(512)
        linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 128)]
        assert any(isinstance(m, nn.ReLU) for m in head.modules())

    def test_hidden_dim(self) -> None:
        linears = [m for m in ProjectionHead(64, 16, hidden_dim=32).modules() if isinstance(m, nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 16)]

    def test_linear_is_one_layer(self) -> None:
        head = ProjectionHead(64, 16, hidden_dim=32, kind="linear")
        assert [(m.in_features, m.out_features) for m in head.modules() if isinstance(m, nn.Linear)] == [(64, 16)]

    @pytest.mark.parametrize("shape", [(4, 10), (2, 3, 10)])
    def test_unit_norm_along_last_dim(self, shape: tuple[int, ...]) -> None:
        out = ProjectionHead(10, 6)(torch.randn(*shape) * 100)
        assert out.shape == (*shape[:-1], 6)
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(shape[:-1]))

    def test_rejects_unknown_kind(self) -> None:
        with pytest.raises(ValueError, match=r"`kind` to be one of \('mlp', 'linear'\), but got 'bn_mlp'"):
            ProjectionHead(8, kind="bn_mlp")  # type: ignore[arg-type]

    @pytest.mark.parametrize(("kwargs", "arg"), [({"out_dim": 0}, "out_dim"), ({"hidden_dim": -1}, "hidden_dim")])
    def test_rejects_non_positive_sizes(self, kwargs: dict[str, int], arg: str) -> None:
        with pytest.raises(ValueError, match=f"`{arg}` to be a positive integer"):
            ProjectionHead(8, **kwargs)  # type: ignore[arg-type]


class TestProjectionHeadHalfPrecision:
    """F.normalize's eps (1e-12) is 0 in float16: the head must not turn a zero projection into NaN."""

    @pytest.mark.parametrize("kind", ["linear", "mlp"])
    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
    def test_zero_projection_gives_zeros_in_every_dtype(self, kind: str, dtype: torch.dtype) -> None:
        head = ProjectionHead(4, 3, kind=kind).to(dtype)  # type: ignore[arg-type]
        for p in head.parameters():
            nn.init.zeros_(p)
        out = head(torch.randn(2, 4, dtype=dtype))
        assert out.dtype == dtype
        assert torch.equal(out, torch.zeros(2, 3, dtype=dtype))

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_output_matches_float32_to_its_precision(self, dtype: torch.dtype) -> None:
        torch.manual_seed(0)
        head = ProjectionHead(8, 4, kind="linear")
        x = torch.randn(5, 8) * 1e-3  # small projections: their squares are subnormal in float16
        expected = head(x.to(dtype).float())
        out = head.to(dtype)(x.to(dtype))
        torch.testing.assert_close(out.float(), expected, rtol=0, atol=4 * torch.finfo(dtype).eps)
