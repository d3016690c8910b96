"""Exact resume and determinism: a run stopped at an epoch end or mid-epoch and resumed equals an uninterrupted one.

What resumes exactly (checked here): weights, optimiser, per-step LR schedule, online probe, memory queue, epoch and
step counters, the training loader's position in its epoch (``ResumableLoader``, saved by Lightning), the per-sample
CPU augmentations (seeded from seed, epoch and index, whichever worker makes them), and (through
:class:`PreemptionCheckpoint`) the global random states the device augmentation draws from. Lightning itself does not
checkpoint random states: without the callback the resumed run diverges (``test_without_rng_restore_...``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_supcon import DigitsDataModule, OnlineEval, Queue, Schedule, SupConModule
from lightning_supcon.cli.preemption import PreemptionCheckpoint
from lightning_supcon.models.optimization import sgd
from tests.helpers import DIGITS, ROOT, SMALL_DIGITS, SigtermAtStep

BATCHES = 4  # training batches per epoch in the runs below


class _StopAfterEpoch(pl.Callback):
    """Ends ``fit`` after epoch ``epoch`` (0-based) as an interruption would, leaving ``max_epochs`` as it is."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def _fit(
    root: Path,
    stop_after: int | None = None,
    ckpt_path: str | None = None,
    restore_rng: bool = True,
    augment_on: str = "device",
    num_workers: int = 0,
    sigterm_at: int | None = None,
) -> tuple[SupConModule, dict[str, float], pl.Trainer]:
    """A deterministic 4-epoch CPU run with warmup + cosine per step, the online probe, kNN and a memory queue."""
    pl.seed_everything(0, workers=True)
    model = SupConModule(
        encoder="small_cnn",
        in_channels=1,
        num_classes=10,
        projection_dim=16,
        schedule=Schedule(warmup_epochs=1),
        optimizer=sgd(lr=0.1, weight_decay=1e-4),
        online=OnlineEval(knn_k=5),
        queue=Queue(size=96),
    )  # fmt: skip
    data = DigitsDataModule(batch_size=32, n_views=2, image_size=8, augment_on=augment_on, num_workers=num_workers)
    callbacks: list[pl.Callback] = [ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=0)]
    callbacks.append(PreemptionCheckpoint(restore_rng=restore_rng))
    if stop_after is not None:
        callbacks.append(_StopAfterEpoch(stop_after))
    if sigterm_at is not None:
        callbacks.append(SigtermAtStep(sigterm_at))
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


def _resumed_without_unreliable_warning(root: Path, **kwargs: Any) -> tuple[SupConModule, dict[str, float], pl.Trainer]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _fit(root, ckpt_path="last", **kwargs)
    assert not [w for w in caught if "unreliable" in str(w.message)], [str(w.message) for w in caught]
    return result


class TestMidEpochResume:
    """Preempted after step 6 of 16 (batch 3 of epoch 1's 4), resumed: the same weights, metrics and LR."""

    @pytest.mark.parametrize(
        ("augment_on", "num_workers"),
        [("device", 0), ("cpu", 0), pytest.param("cpu", 2, marks=pytest.mark.slow)],
    )
    def test_preempted_mid_epoch_and_resumed_equals_uninterrupted(
        self, tmp_path: Path, augment_on: str, num_workers: int,
        uninterrupted: tuple[SupConModule, dict[str, float], pl.Trainer],
    ) -> None:  # fmt: skip
        options: dict[str, Any] = {"augment_on": augment_on, "num_workers": num_workers}
        full, full_metrics, full_trainer = (
            uninterrupted if augment_on == "device" else _fit(tmp_path / "uninterrupted", **options)
        )
        with pytest.raises(SIGTERMException):
            _fit(tmp_path, sigterm_at=6, **options)
        saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert saved["global_step"] == 6 and saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
            {"epoch": 1, "batches": 2}
        ]
        resumed, metrics, trainer = _resumed_without_unreliable_warning(tmp_path, **options)
        assert trainer.global_step == full_trainer.global_step == 4 * BATCHES
        assert _max_difference(resumed.state_dict(), full.state_dict()) <= 1e-6
        assert metrics.keys() == full_metrics.keys() and {"val/probe_top1", "val/knn_top1"} <= metrics.keys()
        assert metrics == pytest.approx(full_metrics, rel=1e-6, abs=1e-6)
        opt, full_opt = trainer.optimizers[0], full_trainer.optimizers[0]
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([g["lr"] for g in full_opt.param_groups])


CLI_BATCHES = 6  # training batches per epoch of the CLI runs


def _cli_fit(cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The digits config, small and fast (2 epochs of 6 batches, validation each epoch), run as users run it."""
    command = [
        *(sys.executable, "-m", "lightning_supcon", "fit", "--config", DIGITS),
        *("--trainer.max_epochs", "2", "--trainer.limit_train_batches", str(CLI_BATCHES)),
        *("--trainer.limit_val_batches", "2", "--trainer.check_val_every_n_epoch", "1", "--trainer.logger", "false"),
        *SMALL_DIGITS,
        *("--model.init_args.online.knn_k", "5"),
        *extra,
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )


def _newest_weights(cwd: Path) -> tuple[int, dict[str, torch.Tensor]]:
    """``(global_step, state_dict)`` of the checkpoint with the most steps in the run's checkpoint folder."""
    loaded = [torch.load(p, map_location="cpu", weights_only=False) for p in (cwd / "outputs/digits").rglob("*.ckpt")]
    newest = max(loaded, key=lambda c: c["global_step"])
    return newest["global_step"], newest["state_dict"]


@pytest.mark.slow  # ~30 s, three CLI runs; TestMidEpochResume sends the same real SIGTERM in-process
def test_real_sigterm_mid_epoch_through_the_cli_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    """SIGTERM after step 9 (batch 3 of epoch 1's 6): exit 143, ``--ckpt_path last`` ends at the same weights and
    final metrics as a run never interrupted, without Lightning's warning about unreliable mid-epoch resumes."""
    full = _cli_fit(tmp_path / "uninterrupted")
    assert full.returncode == 0, (full.stdout + full.stderr)[-3000:]
    kill = '{"class_path": "tests.helpers.SigtermAtStep", "init_args": {"step": 9}}'
    first = _cli_fit(tmp_path / "preempted", f"--trainer.callbacks+={kill}")
    assert first.returncode == 143, (first.stdout + first.stderr)[-3000:]
    assert "Preempted at epoch 1, step 9" in first.stdout
    resumed = _cli_fit(tmp_path / "preempted", "--ckpt_path", "last")
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0 and "Restored all states" in output, output[-3000:]
    assert "unreliable" not in output
    (step, weights), (full_step, full_weights) = (
        _newest_weights(tmp_path / "preempted"),
        _newest_weights(tmp_path / "uninterrupted"),
    )
    assert step == full_step == 2 * CLI_BATCHES
    assert _max_difference(weights, full_weights) <= 1e-6
    assert _final_metrics(resumed.stdout) == _final_metrics(full.stdout)


def _final_metrics(stdout: str) -> list[str]:
    """The lines of ``MetricsSummary``'s table: its heading and the indented ``name  value`` lines below it."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Final metrics after"))
    table = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        table.append(line)
    assert len(table) > 3 and any("val/knn_top1" in line for line in table), table
    return table
