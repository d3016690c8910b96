"""Gradient caching (``cached_forward``, ``SupConModule(micro_batch=...)``): the full-batch step, exactly.

References: the plain full-batch step (BN-free, deterministic networks), and a loop that runs the network once per
micro-batch with its graph kept (dropout and BatchNorm, whose result depends on the micro-batches).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from torch.utils.data import DataLoader, TensorDataset

from lightning_supcon import DigitsDataModule, OnlineEval, Queue, SupConLoss, SupConModule
from lightning_supcon.cli import main
from lightning_supcon.models import gradient_cache
from lightning_supcon.models.gradient_cache import cached_forward, micro_batched, restored_buffers
from lightning_supcon.models.optimization import sgd
from tests.helpers import cli_error, cpu_trainer, fit_args, one_error_line, run_worker

DDP_SCRIPT = Path(__file__).with_name("ddp_equivalence.py")


def _net(batchnorm: bool = False, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    norm: nn.Module = nn.BatchNorm1d(16) if batchnorm else nn.Identity()
    return nn.Sequential(nn.Linear(5, 16), norm, nn.Dropout(dropout), nn.Tanh(), nn.Linear(16, 8)).double()


def _data(batch: int = 10) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(batch, 2, 5, generator=gen, dtype=torch.float64), torch.arange(batch) % 3


def _step(
    net: nn.Module, views: Tensor, micro_batch: int | None, loop: bool = False, **loss: Any
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Loss, parameter gradients and buffers after one backward: plain, cached, or the per-micro-batch loop."""

    def embed(chunk: Tensor) -> tuple[Tensor]:
        return (F.normalize(net(chunk.flatten(0, 1)), dim=-1),)

    torch.manual_seed(123)  # the same dropout draws for every variant that draws in the same order
    if micro_batch is None:
        (flat,) = embed(views)
    elif loop:
        flat = torch.cat([embed(chunk)[0] for chunk in views.split(micro_batch)])
    else:
        (flat,) = cached_forward(embed, views, micro_batch, [net])
    value = SupConLoss(**loss.pop("options", {}))(flat.view(views.shape[0], 2, -1), **loss)
    value.backward()
    return value.detach(), [p.grad.clone() for p in net.parameters()], [b.clone() for b in net.buffers()]


def _assert_same(a: list[Tensor], b: list[Tensor], rtol: float = 1e-10) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert ((x - y).double().norm() / y.double().norm().clamp(min=1e-30)).item() <= rtol


_VARIANTS: dict[str, Callable[[Tensor], dict[str, Any]]] = {
    "labels": lambda labels: {"labels": labels},
    "simclr": lambda labels: {},
    "unknown": lambda labels: {"labels": torch.where(labels == 2, -1, labels)},
    "multi_hot": lambda labels: {"labels": F.one_hot(labels, 3) | F.one_hot((labels + 1) % 3, 3)},
    "float_mask": lambda labels: {"mask": (labels[:, None] == labels[None]).double() * 0.7 + 0.1},
    "class_mean": lambda labels: {"labels": labels, "options": {"denominator": "class_mean"}},
    "summation_in": lambda labels: {"labels": labels, "options": {"summation": "in"}},
}


def _checkpoint_drawing_anew(*args: Any, **kwargs: Any) -> Any:
    return checkpoint(*args, **(kwargs | {"preserve_rng_state": False}))


class TestCachedForward:
    @pytest.mark.parametrize("micro_batch", [1, 3, 10])
    @pytest.mark.parametrize("variant", sorted(_VARIANTS))
    def test_equals_the_full_batch_gradient(self, variant: str, micro_batch: int) -> None:
        views, labels = _data()
        net = _net()
        plain = _step(copy.deepcopy(net), views, None, **_VARIANTS[variant](labels))
        cached = _step(net, views, micro_batch, **_VARIANTS[variant](labels))
        _assert_same([cached[0]], [plain[0]])
        _assert_same(cached[1], plain[1])

    def test_dropout_sees_the_same_draws_in_both_passes(self) -> None:
        views, labels = _data()
        net = _net(dropout=0.5)
        loop = _step(copy.deepcopy(net), views, 4, loop=True, labels=labels)
        cached = _step(net, views, 4, labels=labels)
        _assert_same(cached[1], loop[1])
        # The control: a recomputation that draws new masks (no RNG restore) gives another gradient.
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(gradient_cache, "checkpoint", _checkpoint_drawing_anew)
            other = _step(copy.deepcopy(net), views, 4, labels=labels)
        assert ((other[1][0] - loop[1][0]).norm() / loop[1][0].norm()).item() > 1e-3

    def test_batchnorm_normalises_each_micro_batch_and_updates_running_stats_once(self) -> None:
        views, labels = _data()
        net = _net(batchnorm=True)
        loop = _step(copy.deepcopy(net), views, 4, loop=True, labels=labels)
        cached = _step(net, views, 4, labels=labels)
        _assert_same(cached[1], loop[1])
        _assert_same(cached[2][:2], loop[2][:2])  # running mean and variance
        assert int(cached[2][2]) == int(loop[2][2]) == 3  # num_batches_tracked: 10 samples in 4 + 4 + 2

    def test_bad_micro_batch(self) -> None:
        with pytest.raises(ValueError, match="micro_batch` >= 1"):
            cached_forward(lambda x: (x,), torch.ones(2, 1), 0)

    def test_restored_buffers_survive_an_exception(self) -> None:
        norm = nn.BatchNorm1d(2)
        with pytest.raises(RuntimeError, match="stop"), restored_buffers([norm]):
            norm(torch.randn(4, 2))
            raise RuntimeError("stop")
        assert int(norm.num_batches_tracked) == 0

    def test_micro_batched_concatenates_in_order(self) -> None:
        assert torch.equal(micro_batched(lambda x: x + 1, torch.arange(7), 3), torch.arange(1, 8))


class MLP(nn.Module):
    def __init__(self, batchnorm: bool = False) -> None:
        super().__init__()
        norm: nn.Module = nn.BatchNorm1d(32) if batchnorm else nn.Identity()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(12, 32), norm, nn.Tanh(), nn.Linear(32, 16))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


def _loader(batch: int = 12, multi_hot: bool = False, unknown: bool = False) -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(2 * batch) % 4
    views = torch.randn(4, 12, generator=gen, dtype=torch.float64)[labels][:, None]
    views = views + 0.5 * torch.randn(2 * batch, 2, 12, generator=gen, dtype=torch.float64)
    if unknown:
        labels = torch.where(labels == 3, -1, labels)
    targets = F.one_hot(labels, 4) | F.one_hot((labels + 1) % 4, 4) if multi_hot else labels
    return DataLoader(TensorDataset(views, targets), batch_size=batch)


def _fit(tmp_path: Path, micro_batch: int | None, steps: int = 2, data: dict | None = None, **kwargs: Any) -> Any:
    torch.manual_seed(0)
    model = SupConModule(
        encoder=MLP(kwargs.pop("batchnorm", False)),
        feature_dim=16,
        num_classes=4,
        optimizer=sgd(lr=0.5, weight_decay=1e-4),
        micro_batch=micro_batch,
        **kwargs,
        online=OnlineEval(knn_k=0),
    )
    trainer = cpu_trainer(tmp_path, max_steps=steps, precision="64-true")
    trainer.fit(model, _loader(**(data or {})))
    return model, trainer


_MODULE_VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "simclr": {"supervised": False},
    "unknown_labels": {"data": {"unknown": True}},
    "multi_hot": {"multilabel": True, "data": {"multi_hot": True}},
    "class_mean": {"loss": SupConLoss(denominator="class_mean")},
    "queue": {"queue": Queue(size=30)},
    "momentum_encoder": {"queue": Queue(size=30, momentum=0.9)},
    "joint_ce": {"ce_weight": 0.5},
}


class TestSupConModuleMicroBatch:
    @pytest.mark.parametrize("variant", sorted(_MODULE_VARIANTS))
    def test_steps_equal_the_plain_full_batch_steps(self, tmp_path: Path, variant: str) -> None:
        plain, _ = _fit(tmp_path, None, **copy.deepcopy(_MODULE_VARIANTS[variant]))
        cached, _ = _fit(tmp_path, 5, **copy.deepcopy(_MODULE_VARIANTS[variant]))  # 12 = 5 + 5 + 2
        names = [k for k, v in plain.state_dict().items() if v.is_floating_point()]
        _assert_same([cached.state_dict()[k] for k in names], [plain.state_dict()[k] for k in names])
        start = _fit(tmp_path, None, steps=0, **copy.deepcopy(_MODULE_VARIANTS[variant]))[0].state_dict()
        assert max((plain.state_dict()[k] - start[k]).abs().max().item() for k in names) > 1e-3  # it trained

    def test_batchnorm_running_stats_are_updated_once_per_micro_batch(self, tmp_path: Path) -> None:
        model, _ = _fit(tmp_path, 5, batchnorm=True)
        assert int(model.encoder.net[2].num_batches_tracked) == 2 * 3  # two steps of 3 micro-batches

    @pytest.mark.parametrize(
        ("kwargs", "contrast_size"), [({}, 12 * 2 - 1), ({"micro_batch": 5}, 23), ({"queue": Queue(size=30)}, 23 + 24)]
    )
    def test_logs_the_contrast_size(self, tmp_path: Path, kwargs: dict, contrast_size: int) -> None:
        _, trainer = _fit(tmp_path, kwargs.pop("micro_batch", None), **kwargs)
        assert trainer.callback_metrics["train/contrast_size"].item() == contrast_size  # queue: 24 after step 1

    def test_bad_micro_batch(self) -> None:
        with pytest.raises(ValueError, match="micro_batch` >= 1"):
            SupConModule(encoder=MLP(), feature_dim=16, micro_batch=0)

    def test_accumulation_is_refused_with_the_fix(self, tmp_path: Path) -> None:
        model = SupConModule(encoder=MLP(), feature_dim=16, num_classes=4, online=OnlineEval(knn_k=0))
        trainer = cpu_trainer(tmp_path, max_steps=1, accumulate_grad_batches=2)
        with pytest.raises(ValueError, match="accumulate_grad_batches=2 contrasts each batch only with itself"):
            trainer.fit(model, _loader())

    def test_micro_batch_larger_than_the_batch_is_refused(self, tmp_path: Path) -> None:
        model = SupConModule(encoder="small_cnn", in_channels=1, micro_batch=64, online=OnlineEval(knn_k=0))
        datamodule = DigitsDataModule(batch_size=32, num_workers=0)
        with pytest.raises(ValueError, match=r"`micro_batch` \(64\) is larger than the batch \(32\)"):
            cpu_trainer(tmp_path, max_steps=1).fit(model, datamodule=datamodule)


def _ddp(tmp_path: Path, devices: int, *extra: str) -> dict:
    out = tmp_path / f"ddp_{devices}{''.join(extra).replace('-', '_')}.pt"
    run_worker(DDP_SCRIPT, str(devices), str(out), *extra, cwd=tmp_path)
    result: dict = torch.load(out, weights_only=True)
    return result


@pytest.mark.distributed
def test_ddp_micro_batches_equal_one_process_with_the_global_batch(tmp_path: Path) -> None:
    """2 gloo processes of 8 samples in micro-batches of 3 (3 + 3 + 2, a ragged last one) end where one process
    holding all 16 samples in one piece ends, in float64."""
    single = _ddp(tmp_path, 1)
    cached = _ddp(tmp_path, 2, "--micro-batch=3")
    assert cached["global_batch"] == 16 and cached["contrast_size"] == 16 * 2 - 1
    keys = [k for k in single["state_dict"] if single["state_dict"][k].is_floating_point()]
    for k in keys:
        a, b = cached["state_dict"][k], single["state_dict"][k]
        assert ((a - b).norm() / b.norm().clamp(min=1e-30)).item() < 1e-10, k


class TestCommandLine:
    def test_micro_batch_from_the_command_line(self, workdir: Path) -> None:
        main(fit_args("--model.init_args.micro_batch=16", "--model.init_args.online.knn_k=0"))

    @pytest.mark.parametrize(
        ("option", "match"),
        [
            ("--model.init_args.micro_batch=1000", r"`micro_batch` \(1000\) is larger than the batch \(128\)"),
            ("--trainer.accumulate_grad_batches=4", "accumulate_grad_batches=4 contrasts each batch only with itself"),
        ],
    )
    def test_settings_that_cannot_work_are_one_line(
        self, workdir: Path, capsys: pytest.CaptureFixture[str], option: str, match: str
    ) -> None:
        line = one_error_line(cli_error(capsys, fit_args(option), workdir))
        assert re.search(match, line), line


@pytest.mark.slow  # `make test-slow`: two more 2-process runs
@pytest.mark.distributed
def test_ddp_micro_batches_with_global_batchnorm(tmp_path: Path) -> None:
    """With GlobalBatchNormSync each micro-batch is normalised over the same micro-batch of both ranks (equal
    per-rank batches: 8 = 4 + 4 on each). What is checked: it runs (the ranks' collectives pair up in both passes)
    and the running statistics are updated once per micro-batch: 4 steps x 2 micro-batches."""
    synced = _ddp(tmp_path, 2, "--batchnorm=global", "--micro-batch=4")
    assert synced["norm_during_fit"] == ["GlobalBatchNorm"]
    assert int(synced["state_dict"]["encoder.net.1.num_batches_tracked"]) == 4 * 2
