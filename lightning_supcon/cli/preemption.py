"""Save ``last.ckpt`` when a job is preempted (SIGTERM, or SIGUSR1 outside SLURM) or interrupted (Ctrl-C), so
``--ckpt_path last`` resumes.

The file is the run's own ``last.ckpt`` (the folder of the trainer's ``ModelCheckpoint``), the name that
:class:`~lightning_supcon.callbacks.RunCheckpoint` overwrites later in the resumed run, and
``<default_root_dir>/last.ckpt`` is pointed at it: one name, one newest state (:mod:`lightning_supcon.cli.runs`).

Lightning already turns SIGTERM into a clean stop after the current batch (its ``SignalConnector`` sets
``trainer.received_sigterm`` and the training loop raises ``SIGTERMException``); this callback adds the checkpoint and
the resume hint. On SLURM, Lightning's own SIGUSR1 handler saves ``hpc_ckpt_N.ckpt`` and requeues the job, so this
callback leaves SIGUSR1 alone there.

Ctrl-C (SIGINT) while fitting is treated like a preemption: the first one says so in one line, the run stops after
the current batch, saves ``last.ckpt`` and says where (exit status 130, 128 + SIGINT); a second Ctrl-C quits at once,
and then one line says plainly that this interrupt saved nothing, and which checkpoint is the newest, if any.
(Lightning alone catches the ``KeyboardInterrupt``, saves nothing, prints no path and exits 1.)

The callback also keeps the random states (torch, CUDA, NumPy, Python) in every checkpoint, as they are when the
checkpoint is written, and restores them on resume, before anything of the resumed run draws from them. With the
project's DataModules a resumed run then equals an uninterrupted one, also from a checkpoint taken mid-epoch (a
preemption): the training loader's position is in the checkpoint and its order and per-sample CPU augmentations are
seeded from (seed, epoch, position) (:mod:`lightning_supcon.data.loading`), and the device augmentation draws from the
restored global generator.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_supcon.cli import runs

LAST_NAME = "last.ckpt"
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM
_stopped_by: list[int] = []  # the signal of the latest stop this callback asked for (SIGINT), for the exit status


def stop_exit_code() -> int:
    """The exit status of a run that stopped to save: 130 after Ctrl-C, else 143 (a preemption, SIGTERM's)."""
    return INTERRUPTED_EXIT_CODE if _stopped_by and _stopped_by[-1] == signal.SIGINT else PREEMPTED_EXIT_CODE


def _numpy_state() -> tuple[str, list[int], int, int, float]:
    """NumPy's legacy global state in plain Python types (so checkpoints still load with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    return str(name), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)


def rng_states() -> dict[str, Any]:
    """The global random states of Python, NumPy, torch (and CUDA, when initialised)."""
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned (missing entries are left as they are)."""
    if "python" in states:
        random.setstate(states["python"])
    if "numpy" in states:
        name, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class PreemptionCheckpoint(pl.Callback):
    """On SIGTERM (and SIGUSR1 outside SLURM, and Ctrl-C) stop after the current batch and save ``last.ckpt``.

    The file goes to ``dirpath``, else the directory of the trainer's ``ModelCheckpoint`` (give it a fixed
    ``dirpath`` so that ``--ckpt_path last`` finds the file from a new run), else ``<default_root_dir>/checkpoints``.
    One line on rank zero says where the checkpoint is and how to resume.

    Args:
        dirpath: Directory of ``last.ckpt``; ``None``: as above.
        sigusr1: Also stop on SIGUSR1 (outside SLURM), e.g. the warning signal of ``sbatch --signal`` or a cloud
            scheduler's preemption notice.
        restore_rng: Keep the random states in checkpoints and restore them on resume.
        interrupt: Treat the first Ctrl-C (SIGINT) while fitting as a preemption (see the module docstring);
            ``False``: Lightning's own handling, and one line saying that nothing was saved.

    Example:
        >>> callback = PreemptionCheckpoint(dirpath="outputs/checkpoints")
        >>> callback.state_key
        'PreemptionCheckpoint'
    """

    def __init__(
        self, dirpath: str | None = None, sigusr1: bool = True, restore_rng: bool = True, interrupt: bool = True
    ) -> None:
        self.dirpath = dirpath
        self.sigusr1 = sigusr1
        self.restore_rng = restore_rng
        self.interrupt = interrupt
        self.saved_path: Path | None = None
        self.interrupted = False
        self._trainer: pl.Trainer | None = None
        self._previous_handler: Any = None
        self._registered = False
        self._previous_sigint: Any = None

    # ---- signals ---------------------------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.interrupted = False
        _stopped_by.clear()
        if stage != "fit" or threading.current_thread() is not threading.main_thread():
            return
        if not self.sigusr1 or not hasattr(signal, "SIGUSR1"):
            return
        environment = trainer._accelerator_connector.cluster_environment
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            return  # Lightning saves hpc_ckpt_N.ckpt and requeues
        self._trainer = trainer
        self._previous_handler = signal.signal(signal.SIGUSR1, self._on_sigusr1)
        self._registered = True

    def _on_sigusr1(self, signum: int, frame: FrameType | None) -> None:
        """Ask the loop to stop after the current batch, exactly as Lightning does for SIGTERM."""
        if self._trainer is not None:
            # The flag Lightning's SIGTERM handler sets; the loop broadcasts it from rank 0 under DDP.
            self._trainer._signal_connector.received_sigterm = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Take over Ctrl-C for the training loop. Here, not in ``setup``: Lightning records the handlers it finds
        after ``setup`` and puts them back after ``teardown``, which would leave this one installed."""
        if self.interrupt and self._previous_sigint is None and threading.current_thread() is threading.main_thread():
            self._trainer = trainer
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        """First Ctrl-C: stop after the current batch and save, as for SIGTERM; the next one quits at once."""
        self._restore_sigint()  # a second Ctrl-C raises KeyboardInterrupt again
        if self._trainer is None:
            raise KeyboardInterrupt
        self._trainer._signal_connector.received_sigterm = True
        self.interrupted = True
        _stopped_by.append(signal.SIGINT)
        if self._trainer.is_global_zero:
            print(
                "\nCtrl-C: stopping after this batch to save last.ckpt (Ctrl-C again to quit without saving).",
                file=sys.stderr,
                flush=True,
            )

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def _restore_handler(self) -> None:
        if self._registered and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGUSR1, self._previous_handler)
        self._registered = False
        self._restore_sigint()
        self._trainer = None

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_handler()

    # ---- checkpoint ------------------------------------------------------------------------------------------

    def checkpoint_path(self, trainer: pl.Trainer) -> Path:
        """Where ``last.ckpt`` goes for ``trainer`` (see the class docstring)."""
        if self.dirpath is not None:
            return Path(self.dirpath) / LAST_NAME
        callback = trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
            return Path(callback.dirpath) / (callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION)
        return Path(trainer.default_root_dir) / "checkpoints" / LAST_NAME

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handler()
        if trainer.state.fn != TrainerFn.FITTING:
            return
        if isinstance(exception, KeyboardInterrupt):
            self._announce_nothing_saved(trainer)
            return
        if not isinstance(exception, SIGTERMException):
            return
        path = self.checkpoint_path(trainer)
        if trainer.is_global_zero and path.is_symlink():
            path.unlink()  # ModelCheckpoint(save_last="link"): replace the link, never write through it
        trainer.save_checkpoint(path, weights_only=False)  # the full state, to resume from
        if trainer.is_global_zero:
            runs.point_last(trainer.default_root_dir, path)
        self.saved_path = path
        self._announce(trainer, path)

    @rank_zero_only
    def _announce(self, trainer: pl.Trainer, path: Path) -> None:
        what = "Interrupted (Ctrl-C)" if self.interrupted else "Preempted"
        print(
            f"{what} at epoch {trainer.current_epoch}, step {trainer.global_step}: saved {path}; resume with "
            "the same command and `--ckpt_path last` (or `--ckpt_path <that file>`).",
            flush=True,
        )

    @rank_zero_only
    def _announce_nothing_saved(self, trainer: pl.Trainer) -> None:
        path = self.checkpoint_path(trainer)
        newest = f"the newest checkpoint of this run is {path}" if path.exists() else "this run has saved no checkpoint"
        print(
            f"Interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}: nothing saved; {newest}.",
            file=sys.stderr,
            flush=True,
        )

    # ---- random states ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states()} if self.restore_rng else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.restore_rng and "rng" in state_dict:
            set_rng_states(state_dict["rng"])
