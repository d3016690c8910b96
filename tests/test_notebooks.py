"""The quick-start notebook: stored without outputs, and it runs (``pytest --nbmake``, shortened to 2 epochs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
class TestNotebook:
    def test_is_stored_without_outputs(self, notebook: Path) -> None:
        cells = json.loads(notebook.read_text())["cells"]
        code = [cell for cell in cells if cell["cell_type"] == "code"]
        assert code, "no code cells"
        assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)

    @pytest.mark.slow  # ~20 s: the whole notebook in a kernel; `make test-slow`
    def test_runs(self, notebook: Path, tmp_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"} | {
            "QUICKSTART_EPOCHS": "2",  # the notebook's own length is for people, not for the test suite
            "OMP_NUM_THREADS": "1",  # tiny convolutions crawl with several threads on a busy 2-core machine
            "WANDB_MODE": "offline",
        }
        cmd = [sys.executable, "-m", "pytest", "--nbmake", "--nbmake-timeout=240", "-q", "-p", "no:cacheprovider"]
        cmd += ["-o", "addopts=", f"--rootdir={tmp_path}", str(notebook)]
        proc = subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
        )
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        assert "1 passed" in proc.stdout
