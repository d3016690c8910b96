"""ValidateLastEpoch: a fit whose ``max_epochs`` is not a multiple of ``check_val_every_n_epoch`` still validates
on its last epoch (metrics and the embedding picture); ``validate`` labels the picture with the checkpoint's epoch."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl

from lightning_supcon.cli import cli
from tests.helpers import DIGITS, SMALL_DIGITS

SMALL = [
    *("--config", DIGITS, "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"),
    *("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"),
    *SMALL_DIGITS,
]


def test_two_epochs_with_an_interval_of_five_validate_at_the_end(workdir: Path) -> None:
    app = cli(["fit", *SMALL, "--trainer.max_epochs", "2"])  # the digits config validates every 5 epochs
    assert app.trainer.check_val_every_n_epoch == 5  # put back after the run
    assert {"val/knn_top1", "val/probe_top1"} <= app.trainer.callback_metrics.keys()
    assert (workdir / "outputs/digits/version_0/embeddings/epoch_001.png").is_file()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = cli(["validate", *SMALL, "--ckpt_path", "last"])
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]  # another run's folder: expected
    assert app.trainer.current_epoch == 0  # Lightning restores weights only: the picture must not say epoch 0
    assert (workdir / "outputs/digits/version_1/embeddings/epoch_001.png").is_file()
    assert not (workdir / "outputs/digits/version_1/embeddings/epoch_000.png").exists()


class ValidatedEpochs(pl.Callback):
    """Records the epochs after which validation ran."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.epochs.append(trainer.current_epoch)


@pytest.mark.slow
@pytest.mark.parametrize(("epochs", "validated"), [(2, [1]), (5, [4]), (7, [4, 6])])
def test_validated_epochs(workdir: Path, epochs: int, validated: list[int]) -> None:
    """Every 5 epochs (the config's interval) and after the last one."""
    app = cli(["fit", *SMALL, "--trainer.max_epochs", str(epochs), "--trainer.limit_train_batches", "1",
               "--trainer.callbacks", "[tests.cli.test_last_validation.ValidatedEpochs]"])  # fmt: skip
    recorder = next(c for c in app.trainer.callbacks if isinstance(c, ValidatedEpochs))
    assert recorder.epochs == validated
