"""``RunCheckpoint``: Lightning's ``ModelCheckpoint`` with a folder per run and one stable name for the newest state.

Lightning's ``ModelCheckpoint`` writes ``last-v1.ckpt`` beside a ``last.ckpt`` it did not write, so with a fixed
folder a second run (or a resumed one) leaves ``last.ckpt`` at an old state. Here each run writes into its own
folder (``<default_root_dir>/version_N/checkpoints``, the logger's version; see :mod:`lightning_supcon.cli.runs`), a
resumed run continues its own folder and overwrites its own ``last.ckpt`` (no version counter), and after every save
of the last state ``<default_root_dir>/last.ckpt`` is pointed at it, so that name is always the newest state of the
newest run. :class:`~lightning_supcon.callbacks.PreemptionCheckpoint` writes the same ``last.ckpt`` and moves the
same pointer.

Two behaviours of Lightning's ``ModelCheckpoint`` (2.6) are changed to keep that promise: with a ``monitor`` it writes
``last.ckpt`` only when a top-k file is saved at the same step (a run whose best epoch is its first would leave
``last.ckpt`` there, and ``--ckpt_path last`` would redo the later epochs); here ``last.ckpt`` is written whenever
Lightning would consider saving (each epoch's end, or each validation's). And its ``on_train_end`` saves ``last.ckpt``
even under ``fast_dev_run`` (its own saves skip that mode), which made a smoke test the newest state; here that mode
writes nothing.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_supcon.cli import runs


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that keeps every run's files and points ``<default_root_dir>/last.ckpt`` at the newest.

    Without ``dirpath`` the folder is the logger's run folder (``<save_dir>/<name>/version_N/checkpoints``); without
    a logger it is ``<default_root_dir>/version_N/checkpoints`` with the next free ``N``. The other arguments are
    ``ModelCheckpoint``'s, with ``save_last=True`` and ``enable_version_counter=False`` by default.

    Args:
        save_last: Save ``last.ckpt`` (``True``), or link it to the newest top-k file (``"link"``).
        enable_version_counter: Write ``name-v1.ckpt`` beside an existing ``name.ckpt`` instead of replacing it
            (only useful with a shared ``dirpath``).
        **kwargs: The other arguments of ``ModelCheckpoint``.

    Example:
        >>> RunCheckpoint().save_last
        True
    """

    def __init__(
        self, save_last: bool | Literal["link"] | None = True, enable_version_counter: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(save_last=save_last, enable_version_counter=enable_version_counter, **kwargs)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.dirpath is None and not trainer.loggers and trainer.is_global_zero:
            root = Path(trainer.default_root_dir)
            self.dirpath = str(root / f"version_{runs.next_version(root)}" / "checkpoints")
        with warnings.catch_warnings():
            # A run folder holds files only when this run is resumed into it: its own files, not a clash.
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            super().setup(trainer, pl_module, stage)  # broadcasts rank zero's folder

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("dirpath")
        if isinstance(saved, str) and self.dirpath is not None and saved != self.dirpath and _same(saved, self.dirpath):
            # The same folder spelt another way (relative / absolute, through a link): Lightning compares the strings
            # and would forget the run's top-k files, keeping more than `save_top_k`; renamed to this spelling.
            state_dict = _respelt(state_dict, saved, self.dirpath)
        with warnings.catch_warnings():
            # A checkpoint of another run folder (validate / test / predict, or a new fit from it) is expected to
            # come from another folder: only its best path is kept, as Lightning does, without the warning.
            warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
            super().load_state_dict(state_dict)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_newest(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_newest(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not getattr(trainer, "fast_dev_run", False):  # set by the debugging flags; Lightning skips its other saves
            super().on_train_end(trainer, pl_module)

    def _save_newest(self, trainer: pl.Trainer) -> None:
        """``last.ckpt`` at this step unless Lightning just saved (or should not save) it: a monitored run whose
        metric did not improve still moves its newest state (``save_last="link"`` links to a top-k file: unchanged)."""
        if self.save_last is True and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last == "link" and trainer.is_global_zero and self.last_model_path:
            runs.point_last(trainer.default_root_dir, self.last_model_path)  # Lightning's link skips _save_checkpoint

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero and Path(filepath).name == self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION:
            runs.point_last(trainer.default_root_dir, filepath)


def _same(first: str | Path, second: str | Path) -> bool:
    """Whether two folder paths name the same folder (an existing one; relative paths against the working folder)."""
    try:
        return Path(first).exists() and Path(first).resolve() == Path(second).resolve()
    except OSError:
        return False


def _respelt(state_dict: dict[str, Any], saved: str, dirpath: str | Path) -> dict[str, Any]:
    """``state_dict`` with the paths under ``saved`` written under ``dirpath``: the folder, the top-k files (keys of
    ``best_k_models``), the best, k-th best and last paths."""

    def respell(path: Any) -> Any:
        if isinstance(path, str) and Path(path).parent == Path(saved):
            return str(Path(dirpath) / Path(path).name)
        return path

    state = {key: respell(value) for key, value in state_dict.items()}
    state["dirpath"] = str(dirpath)
    if isinstance(state_dict.get("best_k_models"), dict):
        state["best_k_models"] = {respell(path): score for path, score in state_dict["best_k_models"].items()}
    return state
