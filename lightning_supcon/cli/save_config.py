"""``SaveConfigToLoggers``: write ``config.yaml`` into the run's folder, store the same resolved CLI config as the
W&B run's config, and keep the W&B run id in every checkpoint (so a resumed run continues it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger

from lightning_supcon.cli.loggers import SupConWandbLogger
from lightning_supcon.cli.run_checkpoint import RunCheckpoint
from lightning_supcon.cli.run_loggers import WANDB_RUN_KEY


class SaveConfigToLoggers(SaveConfigCallback):
    """``SaveConfigCallback`` that also logs the full resolved config to every ``WandbLogger`` of the trainer.

    The config is the one ``config.yaml`` holds (every default filled in, ``class_path`` / ``init_args`` kept), as a
    nested dict, so the W&B run page shows e.g. ``model.init_args.temperature`` and runs can be filtered by any
    setting. Lightning calls :meth:`save_config` on rank zero only. A :class:`~lightning_supcon.cli.loggers.
    SupConWandbLogger` then skips the module's hyperparameters that Lightning logs next (they are the config's
    ``model.init_args``), so the run config holds each setting once.

    Every checkpoint keeps the first W&B run's id under ``"wandb_run_id"``; ``fit --ckpt_path ...`` (or SLURM's
    requeue) gives it back to the W&B logger, which continues that run (:mod:`lightning_supcon.cli.run_loggers`).

    Where ``config.yaml`` goes: in ``fit`` with a :class:`RunCheckpoint`, into that run's folder (the parent of its
    ``checkpoints/``), so every run keeps its own config whatever the logger (Lightning's own rule writes it into the
    logger's ``save_dir``, which W&B and ``logger: false`` share between runs); otherwise where Lightning puts it.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and isinstance(trainer.checkpoint_callback, RunCheckpoint):
            return  # on_fit_start: the checkpoint callback has resolved the run folder by then
        super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        if self.already_saved or not isinstance(checkpoint, RunCheckpoint) or checkpoint.dirpath is None:
            return
        if trainer.is_global_zero:
            folder = Path(checkpoint.dirpath).parent
            folder.mkdir(parents=True, exist_ok=True)
            self.parser.save(
                self.config,
                str(folder / self.config_filename),
                skip_none=False,
                overwrite=True,
                multifile=self.multifile,
            )
            self.save_config(trainer, pl_module, "fit")
        self.already_saved = True

    def config_dict(self) -> dict[str, Any]:
        """The resolved config as a plain nested dict (what ``config.yaml`` holds)."""
        text = self.parser.dump(self.config, skip_none=False)
        loaded = yaml.safe_load(text)
        return dict(loaded) if isinstance(loaded, dict) else {}

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if not loggers:
            return
        config = self.config_dict()
        for logger in loggers:
            if isinstance(logger, SupConWandbLogger):
                logger.log_config(config)
            else:
                logger.log_hyperparams(config)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            run_id = getattr(logger, "version", None) if isinstance(logger, WandbLogger) else None
            if isinstance(run_id, str) and run_id:
                checkpoint[WANDB_RUN_KEY] = run_id
                return
