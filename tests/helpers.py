"""Small helpers shared by the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.multiprocessing as mp

from lightning_supcon.cli import main


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a test's process group."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ignore_signal(signum: int, frame: object) -> None:
    """A no-op signal handler."""


class SigtermAtStep(pl.Callback):
    """Sends this process a real SIGTERM after training step ``step``, as a scheduler's preemption would.

    Lightning calls, after its own, the SIGTERM handler it finds when the run starts. Under ``make test`` that is
    coverage's (``sigterm = true``), which saves its data and then ends the process with SIGTERM, killing the test
    run. From ``setup`` (before Lightning registers its handlers) to ``teardown`` such a handler is replaced by a
    no-op, so only Lightning's handler acts, as in a real run.
    """

    def __init__(self, step: int) -> None:
        self.step = step
        self._previous: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if callable(signal.getsignal(signal.SIGTERM)):
            self._previous = signal.signal(signal.SIGTERM, _ignore_signal)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def spawn_ranks(worker: Callable[..., None], out_dir: Path, world: int) -> list[Any]:
    """Run ``worker(rank, port, out_dir)`` in ``world`` processes; return what each saved as ``rank{r}.pt``."""
    mp.spawn(worker, args=(free_port(), str(out_dir)), nprocs=world, join=True)
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(world)]


def cpu_trainer(root: Path, **kwargs: Any) -> pl.Trainer:
    """A quiet CPU Trainer (no logger, checkpoints, progress bar or summary) writing under ``root``."""
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": root,
    }
    return pl.Trainer(**(options | kwargs))


def ddp_trainer(root: str | Path, devices: int, **kwargs: Any) -> pl.Trainer:
    """The quiet CPU Trainer of :func:`cpu_trainer` on ``devices`` processes (DDP when more than one): what the
    worker scripts of the distributed tests (``tests/*/ddp_*.py``) run."""
    strategy = "ddp" if devices > 1 else "auto"
    return cpu_trainer(
        Path(root).parent if Path(root).suffix else Path(root), devices=devices, strategy=strategy, **kwargs
    )


def run_worker(script: Path, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a distributed test's worker ``script`` in a fresh interpreter: its own free port on 127.0.0.1, no fork,
    W&B's service left out, and the repository on ``PYTHONPATH`` so the worker imports ``tests.helpers``.

    Raises:
        subprocess.CalledProcessError: If the worker fails (its stderr's tail in the message).
    """
    env = os.environ | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "PL_DISABLE_FORK": "1"}
    env.pop("WANDB_SERVICE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(script), *args], env=env, cwd=cwd, timeout=timeout, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr[-3000:])
    return proc


ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "configs" / "digits.yaml")
DIGITS_LINEAR = str(ROOT / "configs" / "digits_linear.yaml")
#: The digits config made small for the command-line tests of runs: batches of 32 images of 8 px.
SMALL_DIGITS = ("--data.init_args.batch_size", "32", "--data.init_args.image_size", "8")
# Files of an earlier run in the digits config's output folder that no failed command may touch (`workdir` fixture).
PRECIOUS = {"outputs/digits/checkpoints/last.ckpt": b"an earlier run's checkpoint", "outputs/digits/run.log": b"log"}


def cli_error(capsys: pytest.CaptureFixture[str], args: list[str], workdir: Path) -> list[str]:
    """Run the CLI in-process; assert status 2, no traceback, the earlier files intact; return stderr's lines."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for name, content in PRECIOUS.items():
        assert (workdir / name).read_bytes() == content
    return [line for line in err.splitlines() if line.strip() and "Warning" not in line and "warn(" not in line]


def one_error_line(lines: list[str]) -> str:
    """The single ``lightning-supcon: error:`` line, which must also be the last line."""
    errors = [line for line in lines if line.startswith("lightning-supcon: error:")]
    assert len(errors) == 1, lines
    assert lines[-1] == errors[0], lines
    return errors[0]


def fit_args(*extra: str) -> list[str]:
    """``fit`` with the digits config for one fast_dev_run batch, plus ``extra``."""
    return ["fit", "--config", DIGITS, "--trainer.fast_dev_run=true", *extra]
