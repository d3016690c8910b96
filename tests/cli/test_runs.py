"""Run folders: which checkpoint files are readable, and which one ``--ckpt_path last`` takes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from lightning_supcon.cli import runs


def _save(path: Path, step: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.full((64,), float(step))}}, path)
    return path


def _damage(path: Path, kind: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "not-torch": b"epoch,loss\n0,1.0\n"}[kind])


DAMAGE = ["empty", "truncated", "not-torch"]


class TestCheckReadable:
    @pytest.mark.parametrize("kind", DAMAGE)
    def test_damaged_files_are_refused_by_name(self, tmp_path: Path, kind: str) -> None:
        path = _save(tmp_path / "last.ckpt", 1)
        _damage(path, kind)
        with pytest.raises(runs.CheckpointError, match=r"Cannot read checkpoint .*last\.ckpt"):
            runs.check_readable(path)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(runs.CheckpointError, match="does not exist"):
            runs.check_readable(tmp_path / "nope.ckpt")

    def test_intact_file(self, tmp_path: Path) -> None:
        assert runs.check_readable(_save(tmp_path / "a.ckpt", 1)) == tmp_path / "a.ckpt"


class TestNewestReadable:
    @pytest.mark.parametrize("kind", DAMAGE)
    def test_skips_a_damaged_newest_file(self, tmp_path: Path, kind: str) -> None:
        older = _save(tmp_path / "version_0/checkpoints/epoch=0-step=3.ckpt", 3)
        newest = _save(tmp_path / "version_0/checkpoints/last.ckpt", 5)
        runs.point_last(tmp_path, newest)
        _damage(newest, kind)
        found, skipped = runs.newest_readable(tmp_path)
        assert found == older
        assert [str(newest) in str(err) for err in skipped] == [True]

    def test_the_pointer_wins_and_runs_are_ordered_by_time(self, tmp_path: Path) -> None:
        first = _save(tmp_path / "version_0/checkpoints/last.ckpt", 1)
        second = _save(tmp_path / "version_1/checkpoints/last.ckpt", 2)
        os.utime(first, (time.time() + 60, time.time() + 60))  # touched later, but not the newest run's state
        runs.point_last(tmp_path, second)
        assert runs.candidates(tmp_path) == [second, first]
        assert (tmp_path / "last.ckpt").resolve() == second.resolve()

    def test_nothing_there(self, tmp_path: Path) -> None:
        assert runs.newest_readable(tmp_path / "none") == (None, [])


def test_run_folder_and_versions(tmp_path: Path) -> None:
    assert runs.run_folder(tmp_path / "version_3/checkpoints/last.ckpt") == tmp_path / "version_3"
    assert runs.run_folder(tmp_path / "checkpoints/last.ckpt") is None
    (tmp_path / "version_0").mkdir()
    (tmp_path / "version_4").mkdir()
    assert runs.next_version(tmp_path) == 5


def test_a_requeued_slurm_job_continues_the_folder_of_its_hpc_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_supcon.cli.command import resumed_folder

    state = {"callbacks": {"RunCheckpoint{'monitor': None}": {"dirpath": str(tmp_path / "version_3/checkpoints")}}}
    torch.save(state, tmp_path / "hpc_ckpt_2.ckpt")
    torch.save({"callbacks": {}}, tmp_path / "hpc_ckpt_1.ckpt")
    assert runs.hpc_run_folder(tmp_path) == tmp_path / "version_3"
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert resumed_folder(None, tmp_path) is None  # not on SLURM: a new run
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "supcon")
    assert resumed_folder(None, tmp_path) == tmp_path / "version_3"
    assert resumed_folder(str(tmp_path / "version_1/checkpoints/last.ckpt"), tmp_path) == tmp_path / "version_1"
