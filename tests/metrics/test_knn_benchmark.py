"""benchmarks/knn.py runs end to end at a tiny size: 1 and 2 processes report the same kNN accuracy (no timing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "knn.py"


@pytest.mark.slow
@pytest.mark.distributed
def test_one_and_two_processes_side_by_side(tmp_path: Path) -> None:
    tiny = ["--bank", "5000", "--queries", "3000", "--dim", "16", "--classes", "10", "--k", "5"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *tiny], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.strip("|").split("|") for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    cells = {row[0].strip(): [cell.strip() for cell in row[1:]] for row in rows}
    assert list(cells) == ["1, float32", "2, float32", "2, bfloat16"], proc.stdout
    assert cells["2, float32"][0] == "2,048 / 2,952"  # whole 1024-row blocks per rank
    assert cells["1, float32"][-1] == cells["2, float32"][-1] == "yes", proc.stdout
    assert "machine: " in proc.stdout
