"""Reliability: exact resume, preemption by real signals, determinism, and bad inputs through the CLI.

What resumes exactly (checked here): weights, optimiser, per-step LR schedule, online probe, memory queue, epoch and
step counters, and (through :class:`PreemptionCheckpoint`) the global random states, so shuffles and augmentations
continue as in an uninterrupted run when the checkpoint was taken at an epoch boundary. Lightning itself does not
checkpoint random states: without the callback the resumed run diverges (``test_without_rng_restore_...``).
A preemption checkpoint is taken mid-epoch; the rest of that epoch is drawn from a new shuffle (Lightning's
behaviour for any DataLoader without ``state_dict``), so that resume is complete but not bit-exact.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_supcon import DigitsDataModule, SupConModule
from lightning_supcon.callbacks import PreemptionCheckpoint
from lightning_supcon.cli import main
from lightning_supcon.models.cross_entropy import CrossEntropyModule
from lightning_supcon.models.linear_probe import export_encoder, load_encoder_checkpoint, save_encoder
from tests.data.formats import write_image_tree

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "configs" / "digits.yaml")
DIGITS_LINEAR = str(ROOT / "configs" / "digits_linear.yaml")
BATCHES = 4  # training batches per epoch in the runs below


# ---- exact resume and determinism -----------------------------------------------------------------------------


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
        encoder="small_cnn", in_channels=1, num_classes=10, projection_dim=16, queue_size=96, warmup_epochs=1,
        knn_k=5, lr=0.1,
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


# ---- preemption by real signals -------------------------------------------------------------------------------


def _cli_command(*extra: str) -> list[str]:
    return [
        *(sys.executable, "-m", "lightning_supcon", "fit", "--config", DIGITS),
        *("--trainer.limit_train_batches", str(BATCHES), "--trainer.limit_val_batches", "1"),
        *("--trainer.check_val_every_n_epoch", "1", "--trainer.logger", "false"),
        *("--data.init_args.batch_size", "32", "--data.init_args.image_size", "8", "--model.init_args.knn_k", "0"),
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
    ("signum", "resume"), [(signal.SIGTERM, True), (signal.SIGUSR1, False)], ids=["SIGTERM-resume", "SIGUSR1"]
)
def test_preempted_run_saves_last_and_resumes(tmp_path: Path, signum: signal.Signals, resume: bool) -> None:
    """A real run gets a real signal mid-training, saves ``last.ckpt``, exits; ``--ckpt_path last`` continues it."""
    last = tmp_path / "outputs" / "digits" / "checkpoints" / "last.ckpt"
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
    epoch, step = int(match.group(1)), int(match.group(2))
    assert Path(match.group(3)).resolve() == last.resolve()
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
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, max_steps=1)
    trainer.strategy.connect(SupConModule(in_channels=1, knn_k=0))
    trainer.state.fn = pl.trainer.states.TrainerFn.FITTING
    callback.on_exception(trainer, trainer.lightning_module, SIGTERMException())
    assert target.read_bytes() == b"best weights"
    assert not (tmp_path / "last.ckpt").is_symlink() and callback.saved_path == tmp_path / "last.ckpt"
    callback.on_exception(trainer, trainer.lightning_module, ValueError("not a preemption"))  # nothing saved


# ---- bad inputs through the CLI -------------------------------------------------------------------------------

PRECIOUS = {"outputs/digits/checkpoints/last.ckpt": b"an earlier run's checkpoint", "outputs/digits/run.log": b"log"}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current directory, with a checkpoint and a log in the config's output folder that must survive."""
    monkeypatch.chdir(tmp_path)
    for name, content in PRECIOUS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    return tmp_path


def _cli_error(capsys: pytest.CaptureFixture[str], args: list[str], workdir: Path) -> list[str]:
    """Run the CLI in-process; assert status 2, no traceback, the earlier files intact; return stderr's lines."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for name, content in PRECIOUS.items():
        assert (workdir / name).read_bytes() == content
    return [line for line in err.splitlines() if line.strip() and "Warning" not in line and "warn(" not in line]


def _one_error_line(lines: list[str]) -> str:
    errors = [line for line in lines if line.startswith("lightning-supcon: error:")]
    assert len(errors) == 1, lines
    assert lines[-1] == errors[0], lines
    return errors[0]


def _fit_args(*extra: str) -> list[str]:
    return ["fit", "--config", DIGITS, "--trainer.fast_dev_run=true", *extra]


def _image_folder(train: Path, val: Path) -> list[str]:
    return [
        "--data=lightning_supcon.ImageFolderDataModule", f"--data.init_args.train_dir={train}",
        f"--data.init_args.val_dir={val}", "--data.init_args.image_size=8", "--data.init_args.batch_size=2",
    ]  # fmt: skip


class TestBadInputs:
    def test_missing_image_folder(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        line = _one_error_line(
            _cli_error(capsys, _fit_args(*_image_folder(workdir / "nope", workdir / "nope")), workdir)
        )
        assert "nope" in line

    def test_cifar_without_download(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        args = _fit_args("--data=lightning_supcon.CIFAR10DataModule", f"--data.init_args.data_dir={workdir / 'none'}")
        line = _one_error_line(_cli_error(capsys, args, workdir))
        assert "none" in line and "download" in line

    def test_empty_data_dir(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        (workdir / "empty").mkdir()
        line = _one_error_line(
            _cli_error(capsys, _fit_args(*_image_folder(workdir / "empty", workdir / "empty")), workdir)
        )
        assert "empty" in line and "sub-folder" in line

    def test_val_class_unknown_to_train(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        write_image_tree(workdir / "train", {"a": ["1.png:RGB", "2.png:RGB"], "b": ["1.png:RGB", "2.png:RGB"]})
        write_image_tree(workdir / "val", {"a": ["1.png:RGB"], "c": ["1.png:RGB"]})
        line = _one_error_line(
            _cli_error(capsys, _fit_args(*_image_folder(workdir / "train", workdir / "val")), workdir)
        )
        assert "'c'" in line or "/c" in line

    def test_corrupt_image(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        write_image_tree(workdir / "train", {"a": ["1.png:corrupt", "2.png:corrupt"], "b": ["1.png:corrupt"]})
        line = _one_error_line(
            _cli_error(capsys, _fit_args(*_image_folder(workdir / "train", workdir / "train")), workdir)
        )
        assert "1.png" in line

    def test_batch_larger_than_dataset_with_drop_last(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        line = _one_error_line(_cli_error(capsys, _fit_args("--data.init_args.batch_size=5000"), workdir))
        assert "batch_size" in line and "drop_last" in line

    def test_unknown_encoder_names_the_choices(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        text = "\n".join(_cli_error(capsys, _fit_args("--model.init_args.encoder=resnet9000"), workdir))
        assert "'resnet9000'" in text and "small_cnn" in text

    def test_unknown_encoder_is_one_line(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        _one_error_line(_cli_error(capsys, _fit_args("--model.init_args.encoder=resnet9000"), workdir))

    def test_wrong_type_config_value(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        lines = _cli_error(capsys, _fit_args("--data.init_args.batch_size=abc"), workdir)
        text = "\n".join(lines)
        assert "batch_size" in text and "abc" in text and len(lines) < 15

    def test_cross_entropy_checkpoint_into_linear_probe(
        self, workdir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        model = CrossEntropyModule(encoder="small_cnn", in_channels=1)
        checkpoint: dict[str, Any] = {"state_dict": model.state_dict(), "pytorch-lightning_version": pl.__version__}
        model.on_save_checkpoint(checkpoint)
        torch.save(checkpoint, workdir / "ce.ckpt")
        args = ["fit", "--config", DIGITS_LINEAR, "--trainer.fast_dev_run=true", "--model.init_args.checkpoint=ce.ckpt"]
        text = "\n".join(_cli_error(capsys, args, workdir))  # one line once cli.main unwraps jsonargparse's errors
        assert "'cross_entropy'" in text and "ce.ckpt" in text

    def test_checkpoint_of_another_encoder(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        save_encoder(SupConModule(encoder="small_cnn", in_channels=3, knn_k=0), workdir / "rgb.pt")
        args = ["fit", "--config", DIGITS_LINEAR, "--trainer.fast_dev_run=true", "--model.init_args.checkpoint=rgb.pt"]
        lines = _cli_error(capsys, args, workdir)
        assert "rgb.pt" in "\n".join(lines)

    def test_labels_outside_num_classes(self) -> None:
        model = SupConModule(in_channels=1, num_classes=3, knn_k=0)
        views, labels = torch.randn(4, 2, 1, 8, 8), torch.tensor([0, 1, 2, 3])
        with pytest.raises(ValueError, match=r"Labels must lie in \[0, num_classes=3\), but got values in \[0, 3\]"):
            model.training_step((views, labels), 0)


class TestNoPositives:
    """``n_views=1``: an anchor has positives only through other samples of its class.

    Expected behaviour (what a demanding user wants): a batch whose anchors all lack positives contributes a loss of
    0 (no gradient, no NaN) so one unlucky batch cannot kill a run; but a configuration that can never have a
    positive (``n_views=1`` with ``supervised=False``) is an error at the start, not a silent run at loss 0.
    """

    def test_batch_without_positives_gives_zero_loss_not_nan(self) -> None:
        model = SupConModule(in_channels=1, num_classes=10, knn_k=0, probe=False)
        loss = model.criterion(model.project(model(torch.randn(6, 1, 8, 8)))[:, None], torch.arange(6))
        assert torch.isfinite(loss) and loss.item() == 0.0

    def test_unsupervised_single_view_is_an_error(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        args = _fit_args(
            "--data.init_args.n_views=1", "--model.init_args.supervised=false", "--model.init_args.knn_k=0"
        )
        line = _one_error_line(_cli_error(capsys, args, workdir))
        assert "n_views" in line


# ---- weights-only files ---------------------------------------------------------------------------------------


def test_exported_encoder_loads_with_weights_only(tmp_path: Path) -> None:
    model = SupConModule(encoder="small_cnn", in_channels=1, knn_k=0)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "full.ckpt")
    exported = export_encoder(tmp_path / "full.ckpt", tmp_path / "encoder.pt")
    file = torch.load(exported, map_location="cpu", weights_only=True)  # raises if anything but weights is inside
    assert file["lightning_supcon"]["kind"] == "supcon"
    assert file["state_dict"].keys() == model.encoder.state_dict().keys()
    meta, weights = load_encoder_checkpoint(exported)
    assert meta["in_channels"] == 1
    assert all(torch.equal(weights[k], v) for k, v in model.encoder.state_dict().items())


class TestPreemptionCheckpointUnits:
    def test_sigusr1_sets_lightnings_stop_flag_and_teardown_restores_the_handler(self) -> None:
        previous = signal.getsignal(signal.SIGUSR1)
        callback = PreemptionCheckpoint()
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
        model = SupConModule(in_channels=1, knn_k=0)
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
