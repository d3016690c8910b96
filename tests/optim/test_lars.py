"""LARS against an element-wise loop of Alg. 1 of You et al. 2017 (with SimCLR's exclusions), over several steps."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from lightning_supcon.optim.lars import LARS


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def _model() -> _Net:
    torch.manual_seed(0)
    return _Net()


def _loss(model: nn.Module, step: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(step)
    x, y = torch.randn(8, 5, generator=gen), torch.randn(8, 3, generator=gen)
    return ((model(x) - y) ** 2).mean()


class _ReferenceLARS:
    """Per element, in Python floats: u = g (+ beta w, scaled by eta ||w|| / (||u|| + eps)); v = m v + lr u."""

    def __init__(self, params: list[nn.Parameter], excluded: list[bool], **hp: float) -> None:
        self.params, self.excluded, self.hp = params, excluded, hp
        self.buffers = [[0.0] * p.numel() for p in params]

    def step(self, lr: float) -> None:
        hp = self.hp
        for param, excluded, buf in zip(self.params, self.excluded, self.buffers, strict=True):
            assert param.grad is not None
            w = param.detach().flatten().tolist()
            g = param.grad.flatten().tolist()
            if excluded:
                u = g
            else:
                u = [gi + hp["weight_decay"] * wi for gi, wi in zip(g, w, strict=True)]
                w_norm = math.sqrt(sum(wi * wi for wi in w))
                u_norm = math.sqrt(sum(ui * ui for ui in u))
                ratio = hp["trust_coefficient"] * w_norm / (u_norm + hp["eps"]) if w_norm > 0 and u_norm > 0 else 1.0
                u = [ratio * ui for ui in u]
            for i in range(len(w)):
                buf[i] = hp["momentum"] * buf[i] + lr * u[i]
                w[i] -= buf[i]
            with torch.no_grad():
                param.copy_(torch.tensor(w, dtype=param.dtype).view_as(param))


def _run_both(
    model: _Net, lrs: list[float], *, groups_fn: Callable[[_Net], list[dict]] | None = None, **hp: float
) -> tuple[_Net, _Net]:
    """Train ``model`` with LARS and a copy with the reference, on the same losses; return both."""
    ours, ref = model, copy.deepcopy(model)
    params = list(ours.parameters()) if groups_fn is None else groups_fn(ours)
    optimizer = LARS(params, lr=lrs[0], **hp)
    excluded = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            excluded.append(p.ndim <= 1 if group["lars_exclude"] is None else group["lars_exclude"])
    index = {id(p): i for i, p in enumerate(ours.parameters())}
    ref_params = list(ref.parameters())
    ordered = [ref_params[index[id(p)]] for g in optimizer.param_groups for p in g["params"]]
    reference = _ReferenceLARS(ordered, excluded, **hp)
    for step, lr in enumerate(lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        for net in (ours, ref):
            net.zero_grad()
            _loss(net, step).backward()
        optimizer.step()
        reference.step(lr)
    return ours, ref


def _assert_same(a: nn.Module, b: nn.Module) -> None:
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


class TestLARS:
    @pytest.mark.parametrize("momentum", [0.0, 0.9])
    @pytest.mark.parametrize("weight_decay", [0.0, 0.05])
    @pytest.mark.parametrize("trust_coefficient", [0.001, 0.1])
    def test_matches_reference_with_changing_lr(
        self, momentum: float, weight_decay: float, trust_coefficient: float
    ) -> None:
        ours, ref = _run_both(
            _model(),
            [0.5, 2.0, 1.0, 0.1],
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=1e-8,
        )
        _assert_same(ours, ref)
        assert not torch.equal(ours.fc1.weight, _model().fc1.weight)

    def test_explicit_groups_override_the_ndim_rule(self) -> None:
        def groups(model: _Net) -> list[dict]:
            return [
                {"params": [model.fc1.weight, model.fc1.bias], "lars_exclude": False},  # bias adapted and decayed
                {"params": [model.fc2.weight], "lars_exclude": True},  # weight plain momentum SGD
                {"params": [model.bn.weight, model.bn.bias, model.fc2.bias]},  # None: by ndim
            ]

        ours, ref = _run_both(
            _model(),
            [1.0, 0.5, 0.5],
            groups_fn=groups,
            momentum=0.9,
            weight_decay=0.1,
            trust_coefficient=0.02,
            eps=1e-8,
        )
        _assert_same(ours, ref)

    def test_excluded_tensors_are_plain_momentum_sgd(self) -> None:
        model = _model()
        sgd_model = copy.deepcopy(model)
        lars = LARS([{"params": model.parameters(), "lars_exclude": True}], lr=0.3, momentum=0.9, weight_decay=0.5)
        sgd = torch.optim.SGD(sgd_model.parameters(), lr=0.3, momentum=0.9)
        for step in range(3):
            for net, opt in ((model, lars), (sgd_model, sgd)):
                opt.zero_grad()
                _loss(net, step).backward()
                opt.step()
        _assert_same(model, sgd_model)

    def test_adaptation_changes_the_step(self) -> None:
        # Control for the test above: with adaptation the weights move differently from SGD.
        model = _model()
        sgd_model = copy.deepcopy(model)
        lars, sgd = LARS(model.parameters(), lr=0.3), torch.optim.SGD(sgd_model.parameters(), lr=0.3, momentum=0.9)
        for net, opt in ((model, lars), (sgd_model, sgd)):
            _loss(net, 0).backward()
            opt.step()
        assert not torch.allclose(model.fc1.weight, sgd_model.fc1.weight)
        torch.testing.assert_close(model.fc1.bias, sgd_model.fc1.bias)  # ndim 1: not adapted

    def test_zero_weight_uses_ratio_one(self) -> None:
        weight = nn.Parameter(torch.zeros(2, 2))
        weight.grad = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        LARS([weight], lr=0.5, weight_decay=0.1).step()
        torch.testing.assert_close(weight.detach(), -0.5 * torch.tensor([[1.0, 2.0], [3.0, 4.0]]))

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_precision_step_is_finite_and_follows_float32(self, dtype: torch.dtype) -> None:
        # A tiny update against a large weight: the trust ratio (~1e7) overflows float16, and inf * 0 gave NaN.
        weight = nn.Parameter(torch.full((4, 4), 300.0, dtype=dtype))
        weight.grad = torch.zeros(4, 4, dtype=dtype)
        weight.grad[0, 0] = 1e-7
        reference = nn.Parameter(weight.detach().float())
        reference.grad = weight.grad.float()
        LARS([weight], lr=0.1).step()
        LARS([reference], lr=0.1).step()
        assert torch.isfinite(weight).all()
        torch.testing.assert_close(weight.detach().float(), reference.detach().to(dtype).float())

    def test_hand_computed_two_steps(self) -> None:
        # w = [3, 4] (norm 5), g = [0.6, 0.8] (norm 1), eta = 0.1: ratio 0.5, u = [0.3, 0.4], v = lr u.
        weight = nn.Parameter(torch.tensor([[3.0, 4.0]]))
        optimizer = LARS([weight], lr=1.0, momentum=0.5, trust_coefficient=0.1)
        weight.grad = torch.tensor([[0.6, 0.8]])
        optimizer.step()
        torch.testing.assert_close(weight.detach(), torch.tensor([[2.7, 3.6]]))
        # Second step, lr 2: norm 4.5, g norm 1 -> ratio 0.45, u = [0.27, 0.36], v = 0.5 [0.3, 0.4] + 2 u.
        optimizer.param_groups[0]["lr"] = 2.0
        optimizer.step()
        torch.testing.assert_close(weight.detach(), torch.tensor([[2.7 - 0.69, 3.6 - 0.92]]))

    def test_closure_and_missing_grads(self) -> None:
        model = _model()
        frozen = model.fc2.weight.detach().clone()
        model.fc2.weight.requires_grad_(False)
        optimizer = LARS(model.parameters(), lr=0.1)

        def closure() -> float:
            _loss(model, 0).backward()
            return 1.5

        loss = optimizer.step(closure)
        assert loss == 1.5
        torch.testing.assert_close(model.fc2.weight, frozen)

    def test_state_dict_round_trip(self) -> None:
        model, copy_model = _model(), _model()
        optimizer = LARS(model.parameters(), lr=0.2)
        _loss(model, 0).backward()
        optimizer.step()
        restored = LARS(copy_model.parameters(), lr=0.2)
        restored.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # as if read from a checkpoint
        copy_model.load_state_dict(model.state_dict())
        for net, opt in ((model, optimizer), (copy_model, restored)):
            opt.zero_grad()
            _loss(net, 1).backward()
            opt.step()
        _assert_same(model, copy_model)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"lr": -1.0}, "`lr` to be >= 0, but got -1.0"),
            ({"momentum": 1.0}, r"`momentum` to be in \[0, 1\), but got 1.0"),
            ({"weight_decay": -0.1}, "`weight_decay` to be >= 0, but got -0.1"),
            ({"trust_coefficient": 0.0}, "`trust_coefficient` to be > 0, but got 0.0"),
            ({"eps": -1.0}, "`eps` to be >= 0, but got -1.0"),
        ],
    )
    def test_rejects_bad_arguments(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            LARS(_model().parameters(), **({"lr": 0.1} | kwargs))
