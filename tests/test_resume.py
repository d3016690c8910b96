"""Exact resume and determinism: a run stopped at an epoch boundary and resumed equals the uninterrupted run.

What resumes exactly (checked here): weights, optimiser, per-step LR schedule, online probe, memory queue, epoch and
step counters, and (through :class:`PreemptionCheckpoint`) the global random states, so shuffles and augmentations
continue as in an uninterrupted run when the checkpoint was taken at an epoch boundary. Lightning itself does not
checkpoint random states: without the callback the resumed run diverges (``test_without_rng_restore_...``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_supcon import DigitsDataModule, Schedule, SupConModule
from lightning_supcon.callbacks import PreemptionCheckpoint
from lightning_supcon.models.optimization import sgd

BATCHES = 4  # training batches per epoch in the runs below


class _StopAfterEpoch(pl.Callback):
    """Ends ``fit`` after epoch ``epoch`` (0-based) as an interruption would, leaving ``max_epochs`` as it is."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def _fit(
    root: Path, stop_after: int | None = None, ckpt_path: str | None = None, restore_rng: bool = True
) -> tuple[SupConModule, dict[str, float], pl.Trainer]:
    """A deterministic 4-epoch CPU run with warmup + cosine per step, the online probe, kNN and a memory queue."""
    pl.seed_everything(0, workers=True)
    model = SupConModule(
        encoder="small_cnn", in_channels=1, num_classes=10, projection_dim=16, queue_size=96,
        schedule=Schedule(warmup_epochs=1), knn_k=5, optimizer=sgd(lr=0.1, weight_decay=1e-4),
    )  # fmt: skip
    data = DigitsDataModule(batch_size=32, n_views=2, image_size=8, augment_on="device")
    callbacks: list[pl.Callback] = [ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=0)]
    callbacks.append(PreemptionCheckpoint(restore_rng=restore_rng))
    if stop_after is not None:
        callbacks.append(_StopAfterEpoch(stop_after))
    trainer = pl.Trainer(
        max_epochs=4, limit_train_batches=BATCHES, limit_val_batches=2, num_sanity_val_steps=0, deterministic=True,
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
        default_root_dir=root,
    )  # fmt: skip
    # One thread in every run (the module-scoped fixture's too): the thread count changes float summation order.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer.fit(model, data, ckpt_path=ckpt_path)
    finally:
        torch.set_num_threads(threads)
    return model, {k: float(v) for k, v in trainer.callback_metrics.items()}, trainer


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].numel())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[SupConModule, dict[str, float], pl.Trainer]:
    return _fit(tmp_path_factory.mktemp("uninterrupted"))


class TestExactResume:
    def test_stopped_after_two_epochs_and_resumed_equals_uninterrupted(
        self, tmp_path: Path, uninterrupted: tuple[SupConModule, dict[str, float], pl.Trainer]
    ) -> None:
        full, full_metrics, full_trainer = uninterrupted
        first, _, _ = _fit(tmp_path, stop_after=1)
        assert first.global_step == 2 * BATCHES
        resumed, metrics, trainer = _fit(tmp_path, ckpt_path="last")
        assert trainer.global_step == full_trainer.global_step == 4 * BATCHES
        assert resumed.queue is not None and full.queue is not None and int(resumed.queue.filled) > 0
        assert _max_difference(resumed.state_dict(), full.state_dict()) <= 1e-6  # queue buffers and probe included
        assert metrics.keys() == full_metrics.keys() and {"val/probe_top1", "val/knn_top1"} <= metrics.keys()
        assert metrics == pytest.approx(full_metrics, rel=1e-6, abs=1e-6)
        opt, full_opt = trainer.optimizers[0], full_trainer.optimizers[0]
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([g["lr"] for g in full_opt.param_groups])
        momenta = [s["momentum_buffer"] for s in opt.state.values()]
        full_momenta = [s["momentum_buffer"] for s in full_opt.state.values()]
        assert max((m - f).abs().max().item() for m, f in zip(momenta, full_momenta, strict=True)) <= 1e-6

    def test_without_rng_restore_resume_diverges(
        self, tmp_path: Path, uninterrupted: tuple[SupConModule, dict[str, float], pl.Trainer]
    ) -> None:
        """Documents the limit: Lightning's checkpoints hold no random state, so shuffles and augmentations differ."""
        _fit(tmp_path, stop_after=1, restore_rng=False)
        resumed, _, _ = _fit(tmp_path, ckpt_path="last", restore_rng=False)
        assert _max_difference(resumed.state_dict(), uninterrupted[0].state_dict()) > 1e-3


class TestDeterminism:
    def test_same_seed_same_metrics(
        self, tmp_path: Path, uninterrupted: tuple[SupConModule, dict[str, float], pl.Trainer]
    ) -> None:
        model, metrics, _ = _fit(tmp_path)
        assert metrics == uninterrupted[1]  # exactly
        assert _max_difference(model.state_dict(), uninterrupted[0].state_dict()) == 0.0
