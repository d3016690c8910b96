"""run_loggers: W&B is added beside the run folder's logger, and a resumed fit gets the W&B run id of its checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from jsonargparse import Namespace
from pytorch_lightning.loggers import WandbLogger

from lightning_supcon.cli.command import resumed_checkpoint
from lightning_supcon.cli.loggers import SupConWandbLogger
from lightning_supcon.cli.run_loggers import (
    RUN_LOGGER,
    WANDB_RUN_KEY,
    compose_loggers,
    continue_wandb_run,
    first_is_run_logger,
    stored_wandb_run,
)

WANDB = "lightning_supcon.cli.loggers.SupConWandbLogger"
CSV = "pytorch_lightning.loggers.CSVLogger"
TENSORBOARD = "pytorch_lightning.loggers.TensorBoardLogger"


def _paths(logger: Any) -> list[str]:
    return [entry.class_path for entry in (logger if isinstance(logger, list) else [logger])]


class TestComposeLoggers:
    @pytest.mark.parametrize("given", [None, True])
    def test_default_is_the_run_logger_in_the_experiment_folder(self, given: Any) -> None:
        logger = compose_loggers(given, "outputs/x", 3)
        assert logger.class_path == RUN_LOGGER and logger.init_args == Namespace(
            save_dir="outputs/x", name="", version=3
        )

    def test_false_stays_false(self) -> None:
        assert compose_loggers(False, "outputs/x", None) is False

    def test_wandb_alone_gets_the_run_logger_first(self) -> None:
        logger = compose_loggers(Namespace(class_path=WANDB, init_args=Namespace(project="p")), "outputs/x", None)
        assert _paths(logger) == [RUN_LOGGER, WANDB] and logger[0].init_args.save_dir == "outputs/x"
        assert first_is_run_logger(logger)

    @pytest.mark.parametrize("local", [RUN_LOGGER, CSV])
    def test_a_list_with_a_local_logger_is_kept(self, local: str) -> None:
        given = [Namespace(class_path=local, init_args=Namespace(save_dir=None)), Namespace(class_path=WANDB)]
        logger = compose_loggers(given, "outputs/x", 1)
        assert _paths(logger) == [local, WANDB]
        if local == RUN_LOGGER:
            assert logger[0].init_args.save_dir == "outputs/x" and logger[0].init_args.version == 1

    def test_an_explicit_save_dir_and_other_loggers_are_left_alone(self) -> None:
        run = Namespace(class_path=RUN_LOGGER, init_args=Namespace(save_dir="mine", version=None))
        assert compose_loggers(run, "outputs/x", 2).init_args == Namespace(save_dir="mine", version=None)
        tensorboard = Namespace(class_path=TENSORBOARD, init_args=Namespace(save_dir="tb"))
        assert _paths(compose_loggers(tensorboard, "outputs/x", None)) == [TENSORBOARD]
        assert not first_is_run_logger(tensorboard)


class TestWandbRunId:
    def test_read_back_from_a_checkpoint(self, tmp_path: Path) -> None:
        torch.save({"state_dict": {}, WANDB_RUN_KEY: "abc123"}, tmp_path / "last.ckpt")
        torch.save({"state_dict": {}}, tmp_path / "old.ckpt")
        (tmp_path / "broken.ckpt").write_bytes(b"x")
        assert stored_wandb_run(tmp_path / "last.ckpt") == "abc123"
        assert [stored_wandb_run(tmp_path / name) for name in ("old.ckpt", "broken.ckpt", "none.ckpt")] == [None] * 3
        assert stored_wandb_run(None) is None

    def test_given_to_every_wandb_logger_without_its_own_id(self) -> None:
        loggers = [
            Namespace(class_path=RUN_LOGGER, init_args=Namespace()),
            Namespace(class_path=WANDB, init_args=None),
            Namespace(class_path="pytorch_lightning.loggers.WandbLogger", init_args=Namespace(id="mine")),
        ]
        continue_wandb_run(loggers, "abc123")
        assert "id" not in loggers[0].init_args
        assert loggers[1].init_args.id == "abc123" and loggers[2].init_args.id == "mine"
        continue_wandb_run(loggers, None)
        assert loggers[1].init_args.id == "abc123"


class TestResumedCheckpoint:
    def test_the_file_hpc_or_nothing(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("hpc_ckpt_2.ckpt", "hpc_ckpt_10.ckpt"):
            (tmp_path / name).write_bytes(b"x")
        assert resumed_checkpoint("hpc", tmp_path) == tmp_path / "hpc_ckpt_10.ckpt"
        assert resumed_checkpoint("runs/version_0/checkpoints/last.ckpt", tmp_path) == Path(
            "runs/version_0/checkpoints/last.ckpt"
        )
        monkeypatch.delenv("SLURM_NTASKS", raising=False)
        monkeypatch.delenv("SLURM_JOB_NAME", raising=False)
        assert resumed_checkpoint(None, tmp_path) is None and resumed_checkpoint("best", tmp_path) is None
        monkeypatch.setenv("SLURM_NTASKS", "1")  # a requeued SLURM job: Lightning resumes from the hpc file itself
        monkeypatch.setenv("SLURM_JOB_NAME", "train")
        assert resumed_checkpoint(None, tmp_path) == tmp_path / "hpc_ckpt_10.ckpt"


class TestLogConfigOnce:
    def test_module_hyperparameters_after_the_config_are_skipped(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        logged: list[dict[str, Any]] = []
        monkeypatch.setattr(WandbLogger, "log_hyperparams", lambda self, params: logged.append(dict(params)))
        logger = SupConWandbLogger(save_dir=str(tmp_path), mode="disabled")
        logger.log_hyperparams({"before": 1})  # outside the CLI the module's hyperparameters are the config
        logger.log_config({"model": {"init_args": {"knn_k": 200}}})
        logger.log_hyperparams({"knn_k": 200})  # what Lightning logs after the CLI's config: a duplicate
        assert logged == [{"before": 1}, {"model": {"init_args": {"knn_k": 200}}}]


class TestUsageForms:
    """The two ways the docstrings give to add W&B; both keep the run folder's logger first."""

    @pytest.mark.parametrize(
        "form",
        [
            ["--config", "configs/logger/wandb.yaml", "--trainer.logger.init_args.project", "p"],
            ["--trainer.logger", WANDB, "--trainer.logger.init_args.project", "p"],
        ],
        ids=["config", "class-path"],
    )
    def test_adds_wandb_beside_the_run_logger(
        self, form: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from lightning_supcon.cli import cli
        from lightning_supcon.cli.loggers import RunLogger
        from tests.helpers import DIGITS, ROOT

        monkeypatch.setenv("WANDB_MODE", "disabled")
        monkeypatch.setattr("sys.argv", ["lightning-supcon"])
        form = [str(ROOT / arg) if arg.startswith("configs/") else arg for arg in form]
        extra = ["--trainer.logger.init_args.tags", "[a, b]", f"--trainer.default_root_dir={tmp_path}"]
        app = cli(["--config", DIGITS, *form, *extra], run=False)
        run_logger, wandb_logger = app.trainer.loggers
        assert isinstance(run_logger, RunLogger) and Path(run_logger.log_dir) == tmp_path / "version_0"
        assert isinstance(wandb_logger, SupConWandbLogger) and wandb_logger.name == "p"
        assert wandb_logger._wandb_init["tags"] == ["a", "b"]  # WandbLogger's own arguments pass through
