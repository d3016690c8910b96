"""GlobalBatchNorm: 2 gloo processes equal one process's ``nn.BatchNorm`` over the whole batch, gradients, running
statistics and eval mode included; conversion of a model and back keeps its parameters and state dict."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

from lightning_supcon.nets import build_encoder
from lightning_supcon.nets.batchnorm import GlobalBatchNorm
from tests.helpers import free_port

WORLD = 2
STEPS = 2  # two training steps: the running statistics are updated twice
CASES = [
    {"shape": shape, "sizes": sizes, "affine": affine, "momentum": momentum, "track": track, "dtype": torch.float64}
    for shape, sizes, (affine, momentum, track) in itertools.product(
        [(3,), (3, 4), (3, 4, 5)],
        [(4, 4), (5, 3), (1, 7)],
        [(True, 0.1, True), (False, None, True), (True, 0.1, False)],
    )
]
# Lower-precision inputs (float32 parameters, as under mixed precision): statistics are computed in float32.
CASES += [
    {"shape": (3, 4, 5), "sizes": (5, 3), "affine": True, "momentum": 0.1, "track": True, "dtype": dtype}
    for dtype in (torch.float32, torch.bfloat16)
]
TOLERANCE = {torch.float64: (1e-9, 1e-10), torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 2e-2)}
CONTROL = len(CASES)  # the index of the control result (each rank normalising alone)
LARGE = CONTROL + 1  # the index of the float32 runs at large activation means
LARGE_MEANS = (100.0, 300.0, 1000.0)
LARGE_SIZES = (14, 10)  # ragged


def _reference_class(shape: tuple[int, ...]) -> type[nn.Module]:
    return nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d


def _case_data(case: dict, step: int) -> tuple[Tensor, Tensor]:
    """The global batch ``(N, C, ...)`` of a step (mean far from 0, to catch one-pass variance) and the loss
    weights (a sum over samples, so the ranks' losses add up to the global one)."""
    gen = torch.Generator().manual_seed(10 * step + 1)
    x = 5.0 + 2.0 * torch.randn(sum(case["sizes"]), *case["shape"], generator=gen, dtype=torch.float64)
    return x.to(case["dtype"]), torch.randn(x.shape, generator=gen, dtype=torch.float64).to(case["dtype"])


def _make(cls: type[nn.Module], case: dict) -> nn.Module:
    bn = cls(case["shape"][0], momentum=case["momentum"], affine=case["affine"], track_running_stats=case["track"])
    if case["affine"]:
        with torch.no_grad():
            bn.weight.copy_(torch.linspace(0.5, 1.5, case["shape"][0]))
            bn.bias.copy_(torch.linspace(-1.0, 1.0, case["shape"][0]))
    return bn.double() if case["dtype"] == torch.float64 else bn


def _run(bn: nn.Module, case: dict, rows: slice) -> dict[str, Tensor]:
    """Train ``bn`` for :data:`STEPS` steps on ``rows`` of each global batch, then one eval forward.

    The loss is a weighted sum of the outputs squared; its gradient reaches the layer through ``transpose``, which
    makes it non-contiguous (what gloo collectives mishandle). Returns the outputs, input and parameter gradients
    of the last step, the running statistics and the eval output (where the layer tracks running statistics).
    """
    result: dict[str, Tensor] = {}
    for step in range(STEPS):
        x, weights = _case_data(case, step)
        x = x[rows].clone().requires_grad_()
        bn.zero_grad()
        out = bn(x)
        loss_dtype = torch.float64 if case["dtype"] == torch.float64 else torch.float32
        (out.transpose(0, 1).to(loss_dtype).square() * weights[rows].transpose(0, 1).to(loss_dtype)).sum().backward()
        assert x.grad is not None
        result |= {"out": out.detach(), "x_grad": x.grad}
    if case["affine"]:
        result |= {"weight_grad": bn.weight.grad, "bias_grad": bn.bias.grad}
    if case["track"]:  # eval mode normalises with the running statistics (without them, with the local batch's)
        result |= {"running_mean": bn.running_mean, "running_var": bn.running_var, "tracked": bn.num_batches_tracked}
        bn.eval()
        with torch.no_grad():
            result["eval_out"] = bn(_case_data(case, STEPS)[0][rows])
    return result


def _rank_rows(case: dict, rank: int) -> slice:
    start = sum(case["sizes"][:rank])
    return slice(start, start + case["sizes"][rank])


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    results = []
    for case in [*CASES, CASES[4]]:  # the last one again, as the control
        control = len(results) == CONTROL
        rows = _rank_rows(case, rank)
        bn = _make(_reference_class(case["shape"]) if control else GlobalBatchNorm, case)
        result = _run(bn, case, rows)
        for key in ("weight_grad", "bias_grad"):  # parameter gradients add up over ranks
            if key in result:
                dist.all_reduce(result[key])
        results.append(result)
    results.append({str(m): _large_mean_grads(GlobalBatchNorm, m, _large_rows(rank)) for m in LARGE_MEANS})
    for grads in results[LARGE].values():
        dist.all_reduce(grads["weight_grad"])
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _large_rows(rank: int) -> slice:
    start = sum(LARGE_SIZES[:rank])
    return slice(start, start + LARGE_SIZES[rank])


def _large_mean_grads(
    cls: type[nn.Module], mean: float, rows: slice, dtype: torch.dtype = torch.float32
) -> dict[str, Tensor]:
    """Input and weight gradients of ``sum(bn(x) * dy)`` for activations of mean ``mean`` and std 1.

    The inputs are float32 numbers (also in the float64 reference), so the errors measured are the computation's.
    """
    gen = torch.Generator().manual_seed(3)
    x = (mean + torch.randn(sum(LARGE_SIZES), 4, 6, 6, generator=gen)).to(dtype)[rows].requires_grad_()
    dy = torch.randn(sum(LARGE_SIZES), 4, 6, 6, generator=gen).to(dtype)[rows]
    bn = cls(4).to(dtype)
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 1.5, 4))
        bn.bias.copy_(torch.linspace(-1.0, 1.0, 4))
    (bn(x) * dy).sum().backward()
    assert x.grad is not None and bn.weight.grad is not None
    return {"x_grad": x.grad, "weight_grad": bn.weight.grad}


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory: pytest.TempPathFactory) -> list[list[dict[str, Tensor]]]:
    out_dir = tmp_path_factory.mktemp("batchnorm")
    mp.spawn(_worker, args=(free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


def _expected(case: dict) -> dict[str, Tensor]:
    return _run(_make(_reference_class(case["shape"]), case), case, slice(None))


@pytest.mark.distributed
class TestGlobalBatchNormDistributed:
    @pytest.mark.parametrize("index", range(len(CASES)), ids=[str(c) for c in CASES])
    def test_equals_batchnorm_over_the_global_batch(self, distributed_results: list, index: int) -> None:
        case = CASES[index]
        expected = _expected(case)
        for rank in range(WORLD):
            got = distributed_results[rank][index]
            assert got.keys() == expected.keys()
            rtol, atol = TOLERANCE[case["dtype"]]
            for key, value in expected.items():
                want = value[_rank_rows(case, rank)] if key in ("out", "x_grad", "eval_out") else value
                torch.testing.assert_close(got[key], want, rtol=rtol, atol=atol, msg=f"{key} of rank {rank}")

    def test_control_without_sync_differs(self, distributed_results: list) -> None:
        case = CASES[4]
        expected = _expected(case)
        got = distributed_results[0][CONTROL]
        assert not torch.allclose(got["out"], expected["out"][_rank_rows(case, 0)], atol=1e-3)
        assert not torch.allclose(got["running_var"], expected["running_var"], atol=1e-3)

    @pytest.mark.parametrize("mean", LARGE_MEANS)
    def test_float32_gradients_at_large_means_as_accurate_as_batchnorm(
        self, distributed_results: list, mean: float
    ) -> None:
        """No cancellation in the backward: float32 errors against float64 within 2x of ``nn.BatchNorm2d``'s."""
        exact = _large_mean_grads(nn.BatchNorm2d, mean, slice(None), torch.float64)
        plain = _large_mean_grads(nn.BatchNorm2d, mean, slice(None))
        ours = {
            "x_grad": torch.cat([distributed_results[r][LARGE][str(mean)]["x_grad"] for r in range(WORLD)]),
            "weight_grad": distributed_results[0][LARGE][str(mean)]["weight_grad"],
        }
        report, worse = [], False
        for key, want in exact.items():
            scale = want.abs().max()
            error, plain_error = ((ours[key] - want).abs().max() / scale), ((plain[key] - want).abs().max() / scale)
            report.append(f"{key}: error {error:.2e} against nn.BatchNorm2d's {plain_error:.2e}")
            worse |= bool(error > 2 * plain_error)
        assert not worse, "; ".join(report)


class TestGlobalBatchNorm:
    @pytest.mark.parametrize("cls", [nn.BatchNorm1d, nn.BatchNorm2d])
    def test_single_process_is_batchnorm(self, cls: type[nn.Module]) -> None:
        shape = (6, 3) if cls is nn.BatchNorm1d else (6, 3, 4, 4)
        x = torch.randn(shape)
        bn, ref = GlobalBatchNorm(3), cls(3)
        torch.testing.assert_close(bn(x), ref(x))
        torch.testing.assert_close(bn.running_var, ref.running_var)

    def test_rejects_inputs_without_channels(self) -> None:
        with pytest.raises(ValueError, match=r"shape \(N, C, ...\), but got 1 dimensions"):
            GlobalBatchNorm(3)(torch.randn(3))


class TestConvert:
    def test_round_trip_keeps_parameters_and_state_dict(self) -> None:
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 5), nn.BatchNorm1d(5))
        model[1].running_mean.fill_(0.5)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        params = list(model.parameters())
        model.eval()
        converted = GlobalBatchNorm.convert(model)
        assert [type(m).__name__ for m in converted] == [
            "Conv2d",
            "GlobalBatchNorm",
            "Flatten",
            "Linear",
            "GlobalBatchNorm",
        ]
        assert all(a is b for a, b in zip(converted.parameters(), params, strict=True))  # optimisers keep working
        assert not converted[1].training
        reverted = GlobalBatchNorm.revert(converted)
        assert [type(m) for m in reverted][1::3] == [nn.BatchNorm2d, nn.BatchNorm1d]
        assert all(a is b for a, b in zip(reverted.parameters(), params, strict=True))
        for key, value in reverted.state_dict().items():
            torch.testing.assert_close(value, state[key])

    def test_a_batchnorm_layer_itself_and_sync_batchnorm(self) -> None:
        layer = GlobalBatchNorm.convert(nn.SyncBatchNorm(4))
        assert isinstance(layer, GlobalBatchNorm)
        assert type(GlobalBatchNorm.revert(layer)) is nn.SyncBatchNorm

    def test_resnet_has_no_batchnorm_left(self) -> None:
        model = GlobalBatchNorm.convert(build_encoder("resnet18")[0])
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert norms and all(isinstance(m, GlobalBatchNorm) for m in norms)
