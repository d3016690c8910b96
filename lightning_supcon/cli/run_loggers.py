"""The loggers of a ``lightning-supcon`` run: its folder's ``metrics.csv`` always, W&B beside it, one W&B run per run.

:class:`~lightning_supcon.cli.SupConCLI` applies these rules to ``trainer.logger`` before anything is built:

- no logger given (or ``true``): a :class:`~lightning_supcon.cli.loggers.RunLogger` in ``<default_root_dir>/version_N``;
- a W&B logger given without a local one (``--trainer.logger lightning_supcon.cli.loggers.SupConWandbLogger``): the
  ``RunLogger`` is put first, so W&B *adds* to the run folder (``metrics.csv``, ``hparams.yaml``, ``config.yaml``,
  ``checkpoints/``) instead of replacing it; ``configs/logger/wandb.yaml`` lists both;
- a ``RunLogger`` without ``save_dir`` logs into ``default_root_dir``; a resumed ``fit`` continues its version;
- a resumed ``fit`` (``--ckpt_path last`` or a file, or SLURM's requeue from ``hpc_ckpt_N.ckpt``) continues the W&B
  run whose id the checkpoint holds (:data:`WANDB_RUN_KEY`, written by
  :class:`~lightning_supcon.cli.save_config.SaveConfigToLoggers`): Lightning's ``WandbLogger`` calls
  ``wandb.init(id=..., resume="allow")``, so the curves of a preempted job stay one run. Offline, each start writes
  its own ``offline-run-<time>-<id>`` folder with that same id; ``wandb sync`` uploads them into one run.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from lightning_supcon.cli import runs
from lightning_supcon.cli.loggers import RunLogger

#: Key of the W&B run id in a Lightning checkpoint.
WANDB_RUN_KEY = "wandb_run_id"
RUN_LOGGER = "lightning_supcon.cli.loggers.RunLogger"


def _class(entry: Any) -> type | None:
    """The class a ``class_path`` entry of ``trainer.logger`` names (``None`` if it is not one or cannot load)."""
    path = entry.get("class_path") if isinstance(entry, Namespace | dict) else None
    if not isinstance(path, str) or "." not in path:
        return None
    module, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return found if isinstance(found, type) else None


def _init_args(entry: Any) -> Namespace:
    if entry.get("init_args") is None:
        entry["init_args"] = Namespace()
    args: Namespace = entry["init_args"]
    return args


def compose_loggers(logger: Any, root: str, version: int | None) -> Any:
    """``trainer.logger`` after the rules above: the value to set back into the config.

    Args:
        logger: The parsed ``trainer.logger``: ``None``/``True``/``False``, one ``class_path`` entry or a list.
        root: The run's ``default_root_dir``.
        version: The version of the run folder a resumed ``fit`` continues, else ``None``.

    Example:
        >>> [entry.class_path for entry in compose_loggers(
        ...     Namespace(class_path="lightning_supcon.cli.loggers.SupConWandbLogger"), "outputs/x", None)]
        ['lightning_supcon.cli.loggers.RunLogger', 'lightning_supcon.cli.loggers.SupConWandbLogger']
    """
    if logger is False:
        return logger
    entries = [] if logger is None or logger is True else list(logger) if isinstance(logger, list) else [logger]
    classes = [_class(entry) for entry in entries]
    local = any(cls is not None and issubclass(cls, CSVLogger) for cls in classes)
    if not entries or (not local and any(cls is not None and issubclass(cls, WandbLogger) for cls in classes)):
        entries.insert(0, Namespace(class_path=RUN_LOGGER, init_args=Namespace(save_dir=None, name="", version=None)))
    for entry in entries:
        cls = _class(entry)
        if cls is not None and issubclass(cls, RunLogger):
            args = _init_args(entry)
            if args.get("save_dir") is None:
                args["save_dir"] = root
                args["version"] = version if args.get("version") is None else args["version"]
    return entries if len(entries) > 1 or isinstance(logger, list) else entries[0]


def first_is_run_logger(logger: Any) -> bool:
    """Whether the first logger of ``trainer.logger`` is a ``RunLogger`` (whose version is the run folder)."""
    first = logger[0] if isinstance(logger, list) and logger else logger
    cls = _class(first)
    return cls is not None and issubclass(cls, RunLogger)


def stored_wandb_run(checkpoint: str | Path | None) -> str | None:
    """The W&B run id kept in a checkpoint (``None`` without one, or for a file that cannot be read)."""
    if checkpoint is None or not Path(checkpoint).is_file():
        return None
    try:
        state = torch.load(runs.check_readable(checkpoint), map_location="cpu", weights_only=True, mmap=True)
    except (runs.CheckpointError, RuntimeError, pickle.UnpicklingError):
        return None
    run_id = state.get(WANDB_RUN_KEY) if isinstance(state, dict) else None
    return run_id if isinstance(run_id, str) and run_id else None


def continue_wandb_run(logger: Any, run_id: str | None) -> None:
    """Give every W&B logger of ``trainer.logger`` the ``id`` ``run_id`` unless it has its own ``id``/``version``."""
    if run_id is None:
        return
    for entry in logger if isinstance(logger, list) else [logger]:
        cls = _class(entry)
        if cls is not None and issubclass(cls, WandbLogger):
            args = _init_args(entry)
            if args.get("id") is None and args.get("version") is None:
                args["id"] = run_id
