"""``ValidateLastEpoch``: the last epoch of a fit always validates, whatever ``check_val_every_n_epoch`` says.

Lightning validates after epochs whose number is a multiple of ``check_val_every_n_epoch``; a run of 2 epochs with
an interval of 5 ends with no validation metrics (and no embedding picture). This callback sets the interval to 1
for the last epoch of ``max_epochs`` and puts it back when training ends.
"""

from __future__ import annotations

import pytorch_lightning as pl


class ValidateLastEpoch(pl.Callback):
    """Validate after the last training epoch (``max_epochs - 1``) of every fit.

    Example:
        >>> trainer = pl.Trainer(max_epochs=2, check_val_every_n_epoch=5, logger=False, enable_progress_bar=False)
        >>> callback = ValidateLastEpoch()
        >>> trainer.fit_loop.epoch_progress.current.completed = 1  # the last epoch starts
        >>> callback.on_train_epoch_start(trainer, pl.LightningModule())
        >>> trainer.check_val_every_n_epoch
        1
    """

    def __init__(self) -> None:
        self._interval: int | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epochs = trainer.max_epochs
        last = epochs is not None and epochs > 0 and trainer.current_epoch == epochs - 1
        interval = trainer.check_val_every_n_epoch
        if last and interval is not None and interval > 1:
            self._interval = interval
            trainer.check_val_every_n_epoch = 1

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._interval is not None:
            trainer.check_val_every_n_epoch = self._interval
            self._interval = None
