"""SupConWandbLogger: credentials detection, offline fallback, and a CLI run read back with wandb's own reader.

The end-to-end test runs ``lightning-supcon fit --config configs/digits.yaml --config configs/logger/wandb.yaml`` in
a subprocess with no credentials, no ``WANDB_MODE``, stdin closed and a timeout (a prompt or a hang fails it), then
reads the ``.wandb`` transaction log with ``wandb leet inspect --json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import matplotlib
import pytest
import torch
import wandb

from lightning_supcon.cli import cli
from lightning_supcon.cli.loggers import RunLogger, SupConWandbLogger, has_wandb_credentials, resolve_mode, wandb_hosts
from lightning_supcon.cli.save_config import SaveConfigToLoggers

ROOT = Path(__file__).resolve().parents[2]
CREDENTIAL_VARS = ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_BASE_URL", "NETRC", "WANDB_DIR")
#: Not inherited by the subprocesses: credentials, mode, and the token of a wandb service started in this process.
CLEARED_VARS = (*CREDENTIAL_VARS, "WANDB_SERVICE")
KEY = "k" * 40


@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An environment without W&B credentials or mode: HOME, NETRC and WANDB_DIR in ``tmp_path``."""
    for name in CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    return home


def _env(**values: str) -> dict[str, str]:
    return {"HOME": "/nonexistent", **values}


class TestHasWandbCredentials:
    @pytest.mark.parametrize(
        ("env", "netrc", "expected"),
        [
            ({}, None, False),
            ({"WANDB_API_KEY": KEY}, None, True),
            ({"WANDB_IDENTITY_TOKEN_FILE": "/token"}, None, True),
            ({}, f"machine api.wandb.ai\n  login user\n  password {KEY}\n", True),
            ({}, f"machine example.com login user password {KEY}\n", False),
            ({"WANDB_BASE_URL": "https://wandb.example.com"}, f"machine wandb.example.com password {KEY}\n", True),
            ({"WANDB_BASE_URL": "https://wandb.example.com"}, f"machine api.wandb.ai password {KEY}\n", False),
            ({}, "machine api.wandb.ai login user password\n", False),  # no password
            ({}, "machine api.wandb.ai login 'unterminated\n", False),  # malformed
        ],
    )
    def test_env_and_netrc(self, tmp_path: Path, env: dict[str, str], netrc: str | None, expected: bool) -> None:
        if netrc is not None:
            (tmp_path / "netrc").write_text(netrc)
            env = {**env, "NETRC": str(tmp_path / "netrc")}
        assert has_wandb_credentials(_env(**env)) is expected

    def test_netrc_for_the_default_host_of_this_wandb(self, tmp_path: Path) -> None:
        default_host = urlsplit(wandb.Settings().base_url).hostname
        assert default_host in wandb_hosts({"HOME": str(tmp_path)})
        (tmp_path / "netrc").write_text(f"machine {default_host} password {KEY}\n")
        assert has_wandb_credentials({"HOME": str(tmp_path), "NETRC": str(tmp_path / "netrc")})

    @pytest.mark.parametrize(("netrc_host", "expected"), [("wandb.example.com", True), ("api.wandb.ai", False)])
    def test_host_of_wandb_login_host(self, tmp_path: Path, netrc_host: str, expected: bool) -> None:
        """``wandb login --host URL`` keeps URL in the global settings file and the key in netrc under its host."""
        (tmp_path / "config").mkdir()
        (tmp_path / "config" / "settings").write_text("[default]\nbase_url = https://wandb.example.com\n")
        (tmp_path / "netrc").write_text(f"machine {netrc_host} password {KEY}\n")
        env = {"HOME": str(tmp_path), "NETRC": str(tmp_path / "netrc"), "WANDB_CONFIG_DIR": str(tmp_path / "config")}
        assert wandb_hosts(env) == {"wandb.example.com"}
        assert has_wandb_credentials(env) is expected

    @pytest.mark.parametrize(("name", "expected"), [(".netrc", True), ("_netrc", True), ("other", False)])
    def test_netrc_in_home(self, tmp_path: Path, name: str, expected: bool) -> None:
        (tmp_path / name).write_text(f"machine api.wandb.ai login user password {KEY}\n")
        assert has_wandb_credentials({"HOME": str(tmp_path)}) is expected


class TestResolveMode:
    @pytest.mark.parametrize(
        ("mode", "env", "expected"),
        [
            ("auto", {}, ("offline", "no W&B credentials found")),
            ("auto", {"WANDB_API_KEY": KEY}, ("online", "credentials found")),
            ("auto", {"WANDB_API_KEY": KEY, "WANDB_MODE": "offline"}, ("offline", "WANDB_MODE=offline")),
            ("auto", {"WANDB_API_KEY": KEY, "WANDB_MODE": "dryrun"}, ("offline", "WANDB_MODE=dryrun")),
            ("auto", {"WANDB_MODE": "disabled"}, ("disabled", "WANDB_MODE=disabled")),
            ("auto", {"WANDB_MODE": "online"}, ("offline", "no W&B credentials found")),
            ("auto", {"WANDB_API_KEY": KEY, "WANDB_MODE": "Online "}, ("online", "WANDB_MODE=online")),
            ("online", {}, ("offline", "no W&B credentials found")),
            ("online", {"WANDB_API_KEY": KEY, "WANDB_MODE": "offline"}, ("online", "requested")),
            ("offline", {"WANDB_API_KEY": KEY}, ("offline", "requested")),
            ("disabled", {"WANDB_API_KEY": KEY}, ("disabled", "requested")),
        ],
    )
    def test_table(self, mode: Any, env: dict[str, str], expected: tuple[str, str]) -> None:
        assert resolve_mode(mode, _env(**env)) == expected

    def test_rejects_unknown_mode(self) -> None:
        with pytest.raises(ValueError, match="`mode` to be one of"):
            resolve_mode("cloud", {})  # type: ignore[arg-type]


class TestSupConWandbLogger:
    def test_goes_offline_without_credentials(self, no_credentials: Path, tmp_path: Path) -> None:
        logger = SupConWandbLogger(log_model="all")
        assert (logger.mode, logger.save_dir, logger.name) == ("offline", str(tmp_path), "lightning_supcon")
        init = logger._wandb_init
        assert init["mode"] == "offline" and init["dir"] == str(tmp_path) and "anonymous" not in init
        assert init["settings"].silent and logger._log_model == "all"

    def test_online_with_a_key_and_pass_through(self, no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WANDB_API_KEY", KEY)
        logger = SupConWandbLogger(project="p", save_dir="runs", quiet=False, tags=["a"], settings={"console": "off"})
        init = logger._wandb_init
        assert (logger.mode, init["project"], init["dir"], init["tags"]) == ("online", "p", "runs", ["a"])
        assert init["settings"].console == "off" and not init["settings"].silent

    def test_saves_under_outputs_by_default(self, no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("WANDB_DIR")
        assert SupConWandbLogger().save_dir == "outputs"

    def test_offline_flag_of_wandb_logger(self, no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WANDB_API_KEY", KEY)
        assert SupConWandbLogger(offline=True).mode == "offline"

    def test_experiment_announces_wandb_sync(self, no_credentials: Path, caplog: pytest.LogCaptureFixture) -> None:
        logger = SupConWandbLogger(settings={"console": "off", "x_disable_stats": True})
        try:
            with caplog.at_level("INFO"):
                run = logger.experiment
                assert logger.experiment is run  # announced once
            run_dir = Path(run.dir).parent
            lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("W&B:")]
            assert lines == [
                f"W&B: logging offline (no W&B credentials found) to {run_dir}; "
                f"upload it later with `wandb sync {run_dir}`"
            ]
            assert run_dir.name.startswith("offline-run-") and run_dir.is_dir()
        finally:
            wandb.finish()
            wandb.teardown()  # stop the service; it also clears WANDB_SERVICE, which child processes would join

    def test_online_run_that_cannot_start_goes_offline(
        self, no_credentials: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        monkeypatch.setenv("WANDB_API_KEY", KEY)
        monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: the server is unreachable
        logger = SupConWandbLogger(settings={"console": "off", "x_disable_stats": True, "init_timeout": 2})
        assert logger.mode == "online"
        try:
            with caplog.at_level("INFO"):
                run = logger.experiment
            assert logger.mode == "offline" and run.settings.mode == "offline"
            assert "W&B: logging offline (the online run failed to start: " in caplog.text
        finally:
            wandb.finish()
            wandb.teardown()


class TestSaveConfigToLoggers:
    def test_logs_the_resolved_config(self, no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(sys, "argv", ["lightning-supcon"])
        logged: list[dict[str, Any]] = []
        monkeypatch.setattr(SupConWandbLogger, "log_hyperparams", lambda self, params: logged.append(params))
        args = ["--config", str(ROOT / "configs/digits.yaml"), "--config", str(ROOT / "configs/logger/wandb.yaml")]
        app = cli([*args, "--trainer.logger.init_args.mode", "disabled"], run=False)
        (callback,) = [c for c in app.trainer.callbacks if isinstance(c, SaveConfigToLoggers)]  # type: ignore[attr-defined]
        callback.save_config(app.trainer, app.model, "fit")
        (config,) = logged
        assert config["model"]["init_args"]["loss"]["init_args"]["temperature"] == 0.1
        assert config["data"]["class_path"] == "lightning_supcon.DigitsDataModule"
        run_logger, wandb_logger = config["trainer"]["logger"]  # W&B beside the run folder's metrics.csv
        assert wandb_logger["init_args"]["project"] == "lightning_supcon"
        assert run_logger["class_path"] == "lightning_supcon.cli.loggers.RunLogger"
        assert run_logger["init_args"]["save_dir"] == "outputs/digits"  # the experiment folder, set by the command
        assert config["trainer"]["max_epochs"] == app.trainer.max_epochs
        json.dumps(config)  # plain data

    def test_without_wandb_logger_logs_nothing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(sys, "argv", ["lightning-supcon"])
        monkeypatch.setattr(SupConWandbLogger, "log_hyperparams", lambda self, params: pytest.fail("logged"))
        app = cli(["--config", str(ROOT / "configs/digits.yaml"), "--trainer.logger", "false"], run=False)
        (callback,) = [c for c in app.trainer.callbacks if isinstance(c, SaveConfigToLoggers)]  # type: ignore[attr-defined]
        callback.save_config(app.trainer, app.model, "fit")


def _inspect(wandb_file: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    """The records of a ``.wandb`` transaction log, read by wandb itself (``wandb leet inspect --json``)."""
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(wandb_file)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 and "No such command" in proc.stderr:
        pytest.skip("this wandb has no `wandb leet inspect`")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.fixture
def subprocess_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_VARS}
    (tmp_path / "home").mkdir()
    env |= {
        "HOME": str(tmp_path / "home"),
        "WANDB_DIR": str(tmp_path),
        "WANDB_CACHE_DIR": str(tmp_path / "cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "config"),
        "WANDB_DATA_DIR": str(tmp_path / "data"),
        "MPLCONFIGDIR": matplotlib.get_configdir(),  # keep the font cache: a fresh one takes seconds to build
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    yield env


def test_cli_run_without_account_goes_offline_logs_everything_and_resumes_the_same_run(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """A run, then the same command with ``--ckpt_path last`` (a preempted job resumed): one W&B run id, one run
    folder whose ``metrics.csv`` holds both parts, and a W&B config that holds every setting once."""
    cmd = [
        *(sys.executable, "-m", "lightning_supcon", "fit"),
        *("--config", str(ROOT / "configs/digits.yaml"), "--config", str(ROOT / "configs/logger/wandb.yaml")),
        *("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"),
        *("--trainer.log_every_n_steps", "1", "--trainer.check_val_every_n_epoch", "1"),
        *("--data.init_args.batch_size", "32"),
    ]
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=subprocess_env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")  # WANDB_DIR=tmp_path
    run_id = run_dir.name.rpartition("-")[2]
    assert f"W&B: logging offline (no W&B credentials found) to {run_dir}; " in output
    assert f"upload it later with `wandb sync {run_dir}`" in output
    plot_lines = [line for line in output.splitlines() if line.startswith("Embedding plot: ")]
    assert len(plot_lines) == 1 and (tmp_path / plot_lines[0].removeprefix("Embedding plot: ")).is_file()
    # The resolved config is in the run's own folder, beside its checkpoints (not in the save_dir runs share).
    (config_file,) = [path for path in tmp_path.rglob("config.yaml") if (path.parent / "checkpoints").is_dir()]
    assert not (tmp_path / "config.yaml").exists() and (config_file.parent / "checkpoints" / "last.ckpt").exists()

    records = _inspect(next(run_dir.glob("run-*.wandb")), subprocess_env)
    history: dict[str, Any] = {}
    for record in records:
        if record["type"] == "history":
            history |= record["history"]["item"]
    assert {"train/loss", "val/probe_top1", "val/knn_top1", "trainer/global_step"} <= set(history)
    assert any(key.startswith("lr-SGD") for key in history)
    (image,) = history["val/embeddings.filenames"]
    assert (run_dir / "files" / image).read_bytes()[:4] == b"\x89PNG"
    config: dict[str, Any] = {}
    for record in records:
        if record["type"] == "config":
            config |= record["config"]["update"]
    assert config["model"]["init_args"]["loss"]["init_args"]["temperature"] == 0.1  # the CLI config, nested
    assert config["trainer"]["max_epochs"] == 1
    assert "loss" not in config and "knn_k" not in config  # each setting once: no flat copy of the model's
    assert records[-1]["type"] == "exit" and records[-1]["exit"]["exit_code"] == 0
    run_folder = tmp_path / "outputs" / "digits" / "version_0"
    assert torch.load(run_folder / "checkpoints" / "last.ckpt", weights_only=True)["wandb_run_id"] == run_id
    metrics_rows = (run_folder / "metrics.csv").read_text().splitlines()

    resumed = [*cmd, "--ckpt_path", "last", "--trainer.max_epochs", "2"]
    proc = subprocess.run(
        resumed, cwd=tmp_path, env=subprocess_env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    run_dirs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 2 and {path.name.rpartition("-")[2] for path in run_dirs} == {run_id}  # the same run
    history_steps = [
        record["history"]["item"]["trainer/global_step"]
        for record in _inspect(next(run_dirs[1].glob("run-*.wandb")), subprocess_env)
        if record["type"] == "history" and "trainer/global_step" in record["history"]["item"]
    ]
    assert min(history_steps) >= 2  # the resumed run continues the curves (2 steps per epoch)
    assert sorted(path.name for path in (tmp_path / "outputs" / "digits").iterdir()) == ["last.ckpt", "version_0"]
    rows = (run_folder / "metrics.csv").read_text().splitlines()
    assert rows[: len(metrics_rows)][1:] == metrics_rows[1:] and len(rows) > len(metrics_rows)  # one log, appended


class TestRunLogger:
    def test_a_continued_version_appends_to_its_metrics(self, tmp_path: Path) -> None:
        first = RunLogger(str(tmp_path))
        first.log_metrics({"train/loss": 2.0}, step=0)
        first.save()
        assert Path(first.log_dir) == tmp_path / "version_0"
        resumed = RunLogger(str(tmp_path), version=0)
        resumed.log_metrics({"train/loss": 1.0, "val/top1": 0.5}, step=1)  # a new column too
        resumed.save()
        rows = (tmp_path / "version_0" / "metrics.csv").read_text().splitlines()
        assert rows[0].split(",") == ["step", "train/loss", "val/top1"]
        assert [row.split(",")[:2] for row in rows[1:]] == [["0", "2.0"], ["1", "1.0"]]
        assert RunLogger(str(tmp_path)).version == 1  # a new run: the next folder

    def test_the_command_chooses_it_in_the_experiment_folder(self, tmp_path: Path) -> None:
        app = cli(["--config", str(ROOT / "configs/digits.yaml"), f"--trainer.default_root_dir={tmp_path}"], run=False)
        (logger,) = app.trainer.loggers
        assert isinstance(logger, RunLogger) and Path(logger.log_dir) == tmp_path / "version_0"
