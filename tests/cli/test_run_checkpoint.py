"""RunCheckpoint and the CLI's run folders: every run keeps its files, ``last.ckpt`` is always the newest state."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_supcon.cli import cli, main
from tests.helpers import DIGITS, DIGITS_LINEAR, PRECIOUS, SMALL_DIGITS

BATCHES = 3  # training batches per epoch


def _fit_args(*extra: str) -> list[str]:
    return [
        *("fit", "--config", DIGITS, "--trainer.limit_train_batches", str(BATCHES)),
        *("--trainer.limit_val_batches", "1", "--trainer.check_val_every_n_epoch", "1", "--trainer.callbacks", "[]"),
        *("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"),
        *("--trainer.log_every_n_steps", "1"),
        *SMALL_DIGITS,
        *("--model.init_args.online.knn_k", "0"),
        *extra,
    ]


def _step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def _encoder(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}


class TestRunFolders:
    def test_two_runs_keep_their_files_and_stage_two_reads_the_second(self, workdir: Path) -> None:
        main(_fit_args("--trainer.max_epochs", "1", "--seed_everything", "1"))
        first = {p: p.read_bytes() for p in (workdir / "outputs/digits/version_0").rglob("*") if p.is_file()}
        main(_fit_args("--trainer.max_epochs", "1", "--seed_everything", "2"))
        assert {p: p.read_bytes() for p in first} == first  # nothing of run 1 overwritten or lost
        second = workdir / "outputs/digits/version_1/checkpoints/last.ckpt"
        assert (workdir / "outputs/digits/last.ckpt").resolve() == second.resolve()
        assert not list(workdir.rglob("last-v*.ckpt"))
        probe = cli(["--config", DIGITS_LINEAR], run=False).model  # reads the config's `checkpoint:`
        expected = _encoder(second)
        assert not all(torch.equal(v, _encoder(workdir / "outputs/digits/version_0/checkpoints/last.ckpt")[k])
                       for k, v in expected.items())  # fmt: skip
        for key, value in expected.items():
            assert torch.equal(probe.encoder.state_dict()[key], value), key

    @pytest.mark.parametrize(("epoch", "batch"), [(0, 1), (1, 0)], ids=["epoch-0", "after-first-save"])
    def test_preempted_then_resumed_last_holds_the_final_step(self, workdir: Path, epoch: int, batch: int) -> None:
        step = epoch * BATCHES + batch + 1  # SIGTERM after batch `batch` of epoch `epoch`
        killer = ["--trainer.callbacks+", "tests.helpers.SigtermAtStep", "--trainer.callbacks.step", str(step)]
        with pytest.raises(SystemExit) as exc:
            main(_fit_args("--trainer.max_epochs", "3", *killer))
        assert exc.value.code == 143
        last = workdir / "outputs/digits/last.ckpt"
        assert _step(last) == epoch * BATCHES + batch + 1
        main(_fit_args("--trainer.max_epochs", "3", "--ckpt_path", "last"))
        assert _step(last) == 3 * BATCHES
        assert last.resolve() == (workdir / "outputs/digits/version_0/checkpoints/last.ckpt").resolve()
        assert not list(workdir.rglob("last-v*.ckpt")) and not (workdir / "outputs/digits/version_1").exists()
        rows = (workdir / "outputs/digits/version_0/metrics.csv").read_text().splitlines()
        steps = [int(row.split(",")[1]) for row in rows[1:]]  # one log: the resumed run appended its steps
        assert min(steps) == 0 and max(steps) == 3 * BATCHES - 1


class TestNewestState:
    def test_a_monitored_metric_that_never_improves_still_moves_last(self, workdir: Path) -> None:
        """``val/loss`` with ``mode: max`` on a loss that falls: the best epoch is the first; Lightning 2.6 would
        leave ``last.ckpt`` there (it writes it only with a top-k file), and a resume would redo epochs 1 and 2."""
        monitor = ["--checkpoint.monitor", "val/loss", "--checkpoint.mode", "max"]
        main(_fit_args("--trainer.max_epochs", "3", *monitor))
        last = workdir / "outputs/digits/last.ckpt"
        assert _step(last) == 3 * BATCHES
        best = list((workdir / "outputs/digits/version_0/checkpoints").glob("epoch=*.ckpt"))
        assert len(best) == 1 and _step(best[0]) < 3 * BATCHES  # the top-k file is still the best epoch's

    def test_a_smoke_test_does_not_become_the_newest_state(self, workdir: Path) -> None:
        main(_fit_args("--trainer.max_epochs", "1"))
        last = workdir / "outputs/digits/last.ckpt"
        before = (last.resolve(), _step(last))
        main(_fit_args("--trainer.fast_dev_run", "true"))
        assert (last.resolve(), _step(last)) == before
        planted = "outputs/digits/checkpoints/last.ckpt"  # the `workdir` fixture's, where a smoke test would write
        assert (workdir / planted).read_bytes() == PRECIOUS[planted]

    def test_resuming_from_the_root_link_continues_the_run_folder(self, workdir: Path) -> None:
        main(_fit_args("--trainer.max_epochs", "1"))
        main(_fit_args("--trainer.max_epochs", "2", "--ckpt_path", "outputs/digits/last.ckpt"))
        assert not (workdir / "outputs/digits/version_1").exists()
        assert _step(workdir / "outputs/digits/version_0/checkpoints/last.ckpt") == 2 * BATCHES

    def test_save_last_link_is_accepted_and_the_root_link_follows_it(self, workdir: Path) -> None:
        monitor = ["--checkpoint.monitor", "val/loss", "--checkpoint.mode", "min", "--checkpoint.save_last", "link"]
        main(_fit_args("--trainer.max_epochs", "2", *monitor))
        run_last = workdir / "outputs/digits/version_0/checkpoints/last.ckpt"
        assert run_last.is_symlink() and (workdir / "outputs/digits/last.ckpt").resolve() == run_last.resolve()

    def test_resuming_under_another_spelling_of_the_root_keeps_save_top_k(self, workdir: Path) -> None:
        """``outputs/digits`` then the same folder as an absolute path: Lightning compares the folder as a string and
        would forget the run's top-k file (two files for ``save_top_k: 1``)."""
        monitor = ["--checkpoint.monitor", "val/loss", "--checkpoint.mode", "max", "--checkpoint.save_top_k", "1"]
        main(_fit_args("--trainer.max_epochs", "2", *monitor))
        root = str(workdir / "outputs/digits")
        main(
            _fit_args("--trainer.max_epochs", "4", *monitor, "--trainer.default_root_dir", root, "--ckpt_path", "last")
        )
        top_k = list((workdir / "outputs/digits/version_0/checkpoints").glob("epoch=*.ckpt"))
        assert len(top_k) == 1 and _step(workdir / "outputs/digits/last.ckpt") == 4 * BATCHES
