"""Optimiser and schedule: declared once, injected the LightningCLI way, validated where declared."""

from __future__ import annotations

import inspect

import pytest
import torch

from lightning_supcon import CrossEntropyModule, LinearProbeModule, Schedule, SupConModule
from lightning_supcon.cli import cli
from lightning_supcon.models.optimization import decay_groups, sgd
from lightning_supcon.optim import LARS
from tests.helpers import DIGITS

MODULES = [SupConModule, CrossEntropyModule, LinearProbeModule]
OLD_FLAT_OPTIONS = ("lr", "lr_scaling", "momentum", "weight_decay", "warmup_epochs", "min_lr_ratio", "lr_decay_epochs")


class TestDeclaredOnce:
    @pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
    def test_every_module_takes_the_same_two_arguments(self, module: type) -> None:
        params = inspect.signature(module.__init__).parameters
        assert str(params["optimizer"].annotation) == "OptimizerCallable | None"
        assert str(params["schedule"].annotation) == "Schedule"
        assert params["optimizer"].default is None and params["schedule"].default == Schedule()
        assert not set(OLD_FLAT_OPTIONS) & set(params)

    @pytest.mark.parametrize(
        ("option", "value", "expected"),
        [
            ("torch.optim.NAdam", "0.01", torch.optim.NAdam),
            ("lightning_supcon.optim.LARS", "0.3", LARS),
            ("torch.optim.SGD", "0.2", torch.optim.SGD),
        ],
    )
    def test_any_optimizer_by_class_path(self, option: str, value: str, expected: type) -> None:
        args = ["--config", DIGITS, "--model.init_args.optimizer", option, "--model.init_args.optimizer.lr", value]
        app = cli([*args, "--model.init_args.schedule.warmup_epochs=1", "--trainer.logger=false"], run=False)
        optimizer = app.model.optimizer(decay_groups(app.model.parameters()))
        assert type(optimizer) is expected and optimizer.defaults["lr"] == float(value)
        assert app.model.schedule == Schedule(warmup_epochs=1)

    def test_help_lists_the_schedule_options(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit):
            cli(["fit", "--model.help", "lightning_supcon.SupConModule"], run=False)
        out = capsys.readouterr().out
        for option in ("lr_scaling", "warmup_epochs", "min_lr_ratio", "lr_decay_epochs", "lr_decay_rate"):
            assert f"--model.schedule.{option}" in out


class TestSchedule:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"lr_decay_epochs": [3, 1]}, r"`lr_decay_epochs` ascending and >= 0, but got \[3, 1\]"),
            ({"lr_decay_epochs": [1], "lr_decay_rate": 0.0}, r"`lr_decay_rate` in \(0, 1\], but got 0.0"),
            ({"lr_decay_epochs": [1], "min_lr_ratio": 0.1}, "with step decay .* leave it at 0"),
            ({"warmup_epochs": -1}, r"`warmup_epochs` >= 0, but got -1"),
            ({"min_lr_ratio": 2.0}, r"`min_lr_ratio` in \[0, 1\], but got 2.0"),
        ],
    )
    def test_bad_values(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            Schedule(**kwargs)

    def test_frozen(self) -> None:
        with pytest.raises(AttributeError):
            Schedule().warmup_epochs = 3  # type: ignore[misc]


class TestDecayGroups:
    def test_biases_and_norms_get_no_weight_decay(self) -> None:
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
        optimizer = sgd(lr=0.1, weight_decay=1e-4)(decay_groups(model.parameters()))
        assert [(len(g["params"]), g["weight_decay"]) for g in optimizer.param_groups] == [(1, 1e-4), (3, 0.0)]

    def test_frozen_parameters_are_left_out(self) -> None:
        model = torch.nn.Linear(4, 4).requires_grad_(False)
        assert decay_groups(model.parameters()) == []
