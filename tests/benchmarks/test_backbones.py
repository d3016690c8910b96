"""benchmarks/backbones.py runs end to end at a tiny size and prints one row per backbone (no timing is checked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.test_benchmarks import is_rate, run_script, table_rows

TINY = ["--batch", "2", "--image-size", "32", "--repeats", "1", "--windows", "1", "--threads", "1"]


class TestBackbones:
    @pytest.mark.slow  # ~13 s of ResNet-18 steps
    def test_one_row_per_backbone_against_resnet18(self, tmp_path: Path) -> None:
        backbones = ["resnet18", "timm/resnet18"]
        proc = run_script("backbones.py", *TINY, "--backbones", *backbones, tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows = table_rows(proc.stdout)
        assert list(rows) == backbones
        assert all(cells[0] == "11.17 M" and is_rate(cells[1]) for cells in rows.values()), proc.stdout
        assert rows["resnet18"][3] == "1.00x"
        assert "machine: " in proc.stdout

    @pytest.mark.slow  # ~1 min on a busy 2-core machine: six backbones
    def test_every_family(self, tmp_path: Path) -> None:
        proc = run_script("backbones.py", *TINY, tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert len(table_rows(proc.stdout)) == 4
