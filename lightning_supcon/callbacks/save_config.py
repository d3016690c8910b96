"""``SaveConfigToLoggers``: write ``config.yaml`` and store the same resolved CLI config as the W&B run's config."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import yaml
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger


class SaveConfigToLoggers(SaveConfigCallback):
    """``SaveConfigCallback`` that also logs the full resolved config to every ``WandbLogger`` of the trainer.

    The config is the one ``config.yaml`` holds (every default filled in, ``class_path`` / ``init_args`` kept), as a
    nested dict, so the W&B run page shows e.g. ``model.init_args.temperature`` and runs can be filtered by any
    setting. Lightning calls :meth:`save_config` on rank zero only.
    """

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
            logger.log_hyperparams(config)
