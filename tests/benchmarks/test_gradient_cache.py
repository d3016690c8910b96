"""benchmarks/gradient_cache.py runs end to end on the CPU at tiny sizes (no timing or memory figure is checked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.test_benchmarks import run_script, table_rows

TINY = ["--encoder", "small_cnn", "--image-size", "16", "--threads", "1", "--steps", "1"]


@pytest.mark.slow  # two fresh processes, each importing torch and Lightning
def test_plain_and_cached_step_in_one_table(tmp_path: Path) -> None:
    proc = run_script("gradient_cache.py", *TINY, "--batch", "8", "--micro-batch", "2", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = table_rows(proc.stdout)
    assert list(rows) == ["plain step", "micro_batch 2"], proc.stdout
    assert rows["plain step"][1] == "1.00x" and float(rows["micro_batch 2"][0]) > 0
