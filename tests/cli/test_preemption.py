"""PreemptionCheckpoint: real signals mid-training save ``last.ckpt`` and exit 143; ``--ckpt_path last`` resumes."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_supcon import OnlineEval, SupConModule
from lightning_supcon.cli.preemption import PreemptionCheckpoint
from tests.helpers import DIGITS, SMALL_DIGITS

BATCHES = 4  # training batches per epoch in the runs below


def _cli_command(*extra: str) -> list[str]:
    return [
        *(sys.executable, "-m", "lightning_supcon", "fit", "--config", DIGITS),
        *("--trainer.limit_train_batches", str(BATCHES), "--trainer.limit_val_batches", "1"),
        *("--trainer.check_val_every_n_epoch", "1", "--trainer.logger", "false"),
        *SMALL_DIGITS,
        *("--model.init_args.online.knn_k", "0"),
        *extra,
    ]


def _env() -> dict[str, str]:
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "LIGHTNING_SUPCON_DEBUG": ""}


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=30)
            pytest.fail(f"{path} did not appear (exit status {proc.returncode})")
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("signum", "resume"),
    [(signal.SIGTERM, True), pytest.param(signal.SIGUSR1, False, marks=pytest.mark.slow)],  # the same path, ~10 s
    ids=["SIGTERM-resume", "SIGUSR1"],
)
def test_preempted_run_saves_last_and_resumes(tmp_path: Path, signum: signal.Signals, resume: bool) -> None:
    """A real run gets a real signal mid-training, saves ``last.ckpt``, exits; ``--ckpt_path last`` continues it."""
    last = tmp_path / "outputs" / "digits" / "last.ckpt"  # the stable name, a link into the run folder
    log = tmp_path / "first.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            _cli_command("--trainer.max_epochs", "1000"), cwd=tmp_path, env=_env(), stdout=out, stderr=subprocess.STDOUT
        )
        try:
            _wait_for(last, proc, timeout=120)  # ModelCheckpoint's file after epoch 0: training is under way
            first_save = last.stat().st_mtime_ns
            time.sleep(0.3)  # a few batches into the next epoch
            proc.send_signal(signum)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    output = log.read_text()
    assert proc.returncode == 143, output[-3000:]  # 128 + SIGTERM: schedulers see an interrupted job
    match = re.search(r"Preempted at epoch (\d+), step (\d+): saved (\S+); resume with", output)
    assert match, output[-3000:]
    assert "`weights_only` was not set" not in output  # the preemption save says what it saves
    epoch, step = int(match.group(1)), int(match.group(2))
    assert (tmp_path / match.group(3)).resolve() == last.resolve()  # relative to the run's working directory
    assert last.stat().st_mtime_ns > first_save and step > 0
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == step and checkpoint["epoch"] == epoch
    assert "rng" in checkpoint["callbacks"]["PreemptionCheckpoint"]
    if not resume:  # the same resume path as SIGTERM; one subprocess less
        return

    resumed = subprocess.run(
        _cli_command("--trainer.max_epochs", str(epoch + 2), "--ckpt_path", "last"),
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert "Restored all states from the checkpoint at" in output and "last.ckpt" in output
    # The saved step is kept and the interrupted epoch is finished, not repeated: (epoch + 2) whole epochs.
    assert f"Final metrics after {epoch + 2} epochs ({(epoch + 2) * BATCHES} steps)" in output, output[-3000:]


def test_preemption_checkpoint_replaces_a_last_link_instead_of_writing_through_it(tmp_path: Path) -> None:
    target = tmp_path / "epoch=0.ckpt"
    target.write_bytes(b"best weights")
    (tmp_path / "last.ckpt").symlink_to(target)
    callback = PreemptionCheckpoint(dirpath=str(tmp_path))
    # default_root_dir = dirpath: <root>/last.ckpt is the saved file itself (no link to itself; nothing in the cwd)
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, max_steps=1, default_root_dir=str(tmp_path)
    )
    trainer.strategy.connect(SupConModule(in_channels=1, online=OnlineEval(knn_k=0)))
    trainer.state.fn = pl.trainer.states.TrainerFn.FITTING
    callback.on_exception(trainer, trainer.lightning_module, SIGTERMException())
    assert (
        target.read_bytes() == b"best weights"
        and torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == 0
    )
    assert not (tmp_path / "last.ckpt").is_symlink() and callback.saved_path == tmp_path / "last.ckpt"
    callback.on_exception(trainer, trainer.lightning_module, ValueError("not a preemption"))  # nothing saved


class SigintAtStep(pl.Callback):
    """Presses Ctrl-C (a real SIGINT to this process) after training step ``step``, ``times`` times."""

    def __init__(self, step: int = 1, times: int = 1) -> None:
        self.step, self.times = step, times

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)


def _interrupted_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    from lightning_supcon.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-supcon"])
    args = _cli_command("--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false", *extra)[3:]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--trainer.callbacks+=tests.cli.test_preemption.SigintAtStep"])
    captured = capsys.readouterr()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    return int(exit_info.value.code or 0), captured.out + captured.err


class TestSilentInterrupt:
    """Ctrl-C in the first epoch exited 1 with no checkpoint and no word; SIGTERM saved one."""

    def test_ctrl_c_in_the_first_epoch_saves_like_a_preemption(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, output = _interrupted_fit(tmp_path, monkeypatch, capsys)
        assert code == 130, output[-3000:]  # 128 + SIGINT
        assert "Ctrl-C: stopping after this batch to save last.ckpt" in output
        match = re.search(r"Interrupted \(Ctrl-C\) at epoch 0, step (\d+): saved (\S+); resume with", output)
        assert match, output[-3000:]
        checkpoint = torch.load(tmp_path / match.group(2), map_location="cpu", weights_only=False)
        assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == int(match.group(1)) >= 1

    def test_without_the_handler_it_says_nothing_was_saved(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, output = _interrupted_fit(tmp_path, monkeypatch, capsys, "--preemption.interrupt", "false")
        assert code == 1, output[-3000:]  # Lightning's own exit
        assert "Interrupted at epoch 0, step 1: nothing saved; this run has saved no checkpoint." in output
        assert not list(tmp_path.rglob("*.ckpt"))

    def test_a_second_ctrl_c_quits_at_once(self) -> None:
        callback = PreemptionCheckpoint()
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
        callback.setup(trainer, SupConModule(in_channels=1, online=OnlineEval(knn_k=0)), "fit")
        callback.on_train_start(trainer, trainer.lightning_module)
        try:
            os.kill(os.getpid(), signal.SIGINT)  # the first: a flag, no exception
            assert trainer.received_sigterm and callback.interrupted
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.1)  # the handler runs between bytecodes
        finally:
            callback.teardown(trainer, trainer.lightning_module, "fit")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class TestPreemptionCheckpointUnits:
    def test_sigusr1_sets_lightnings_stop_flag_and_teardown_restores_the_handler(self) -> None:
        previous = signal.getsignal(signal.SIGUSR1)
        callback = PreemptionCheckpoint()
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
        model = SupConModule(in_channels=1, online=OnlineEval(knn_k=0))
        callback.setup(trainer, model, "validate")  # only fit is preempted
        assert signal.getsignal(signal.SIGUSR1) == previous
        callback.setup(trainer, model, "fit")
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)
            assert trainer.received_sigterm
        finally:
            callback.teardown(trainer, model, "fit")
        assert signal.getsignal(signal.SIGUSR1) == previous

    def test_checkpoint_path_without_model_checkpoint(self, tmp_path: Path) -> None:
        trainer = pl.Trainer(default_root_dir=tmp_path, enable_checkpointing=False, logger=False)
        assert PreemptionCheckpoint().checkpoint_path(trainer) == tmp_path / "checkpoints" / "last.ckpt"

    def test_random_states_round_trip_and_can_be_turned_off(self) -> None:
        callback = PreemptionCheckpoint()
        state = callback.state_dict()
        expected = torch.rand(3)
        torch.rand(5)
        callback.load_state_dict(state)
        assert torch.equal(torch.rand(3), expected)
        assert PreemptionCheckpoint(restore_rng=False).state_dict() == {}


class TestRandomStateRestore:
    """Each generator kept in the checkpoint (Python, NumPy, torch) is restored on resume, through a real save/load."""

    @staticmethod
    def _draws() -> tuple[list[float], list[float], list[float]]:
        return [random.random() for _ in range(3)], np.random.rand(3).tolist(), torch.rand(3).tolist()

    def test_every_generator_is_restored_after_a_weights_only_round_trip(self, tmp_path: Path) -> None:
        random.seed(1)
        np.random.seed(2)
        torch.manual_seed(3)
        np.random.randn()  # a cached Gaussian is part of NumPy's state
        path = tmp_path / "state.pt"
        torch.save(PreemptionCheckpoint().state_dict(), path)
        expected = self._draws()
        random.seed(11)
        np.random.seed(12)
        torch.manual_seed(13)
        PreemptionCheckpoint().load_state_dict(torch.load(path, weights_only=True))
        python, numpy, torch_ = self._draws()
        assert python == expected[0], "Python's `random` state not restored"
        assert numpy == expected[1], "NumPy's global state not restored"
        assert torch_ == expected[2], "torch's state not restored"

    @pytest.mark.parametrize("generator", ["python", "numpy", "torch"])
    def test_each_generator_alone(self, generator: str) -> None:
        state = PreemptionCheckpoint().state_dict()
        expected = self._draws()
        self._draws()
        PreemptionCheckpoint().load_state_dict({"rng": {generator: state["rng"][generator]}})
        index = ["python", "numpy", "torch"].index(generator)
        assert self._draws()[index] == expected[index]

    def test_restore_rng_false_leaves_the_generators_alone(self) -> None:
        state = PreemptionCheckpoint().state_dict()
        self._draws()
        following = self._snapshot()
        PreemptionCheckpoint(restore_rng=False).load_state_dict(state)
        assert self._snapshot() == following

    @staticmethod
    def _snapshot() -> tuple[Any, list[int], list[int]]:
        return random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist()
