"""The benchmark scripts run end to end on the CPU at tiny sizes and print their tables (no timing is checked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TINY = ["--encoder", "small_cnn", "--batch", "8", "--image-size", "16", "--num-images", "32"]
TINY += ["--warmup", "1", "--steps", "2", "--windows", "2", "--num-workers", "0", "--threads", "1"]


def run_script(name: str, *args: str, tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<name>`` from ``tmp_path`` (the scripts work from any directory) on the CPU."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    command = ["bash", str(BENCHMARKS / name)] if name.endswith(".sh") else [sys.executable, str(BENCHMARKS / name)]
    if name.endswith(".sh"):
        env["PYTHON"] = sys.executable
    return subprocess.run(
        [*command, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The markdown table's rows, by first cell."""
    rows = [line.strip("|").split("|") for line in stdout.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows[1:]}


def is_rate(cell: str) -> bool:
    """Whether a table cell holds a positive images-per-second figure such as ``1,234`` or ``7.52``."""
    try:
        return float(cell.replace(",", "")) > 0
    except ValueError:
        return False


class TestThroughput:
    @pytest.mark.slow  # ~30 s: four ResNet pipelines; `make test-slow` runs it
    def test_four_pipelines_in_one_table(self, tmp_path: Path) -> None:
        proc = run_script("throughput.py", *TINY, tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows = table_rows(proc.stdout)
        assert [name[:3] for name in rows] == ["(a)", "(b)", "(c)", "(d)"]
        assert all(is_rate(cells[0]) for cells in rows.values()), proc.stdout
        assert next(iter(rows.values()))[2] == "1.00x"
        assert "Lightning Trainer overhead" in proc.stdout
        assert "machine: " in proc.stdout


class TestOptions:
    def test_unknown_option_is_a_usage_error(self, tmp_path: Path) -> None:
        proc = run_script("options.py", "--variants", "plain,fp8", tmp_path=tmp_path)
        assert proc.returncode == 2
        assert "Expected options among" in proc.stderr

    def test_a_variant_past_its_timeout_is_reported_not_raised(self, tmp_path: Path) -> None:
        proc = run_script("options.py", *TINY, "--variants", "compile", "--timeout", "1", tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert table_rows(proc.stdout)["compile"][0] == "failed: timed out after 1 s"

    def test_combined_options_run_through_the_trainer(self, tmp_path: Path) -> None:
        proc = run_script("options.py", *TINY, "--variants", "channels_last+bf16", tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        cells = table_rows(proc.stdout)["channels_last+bf16"]
        assert is_rate(cells[0]), proc.stdout
        assert cells[2] == ""  # no plain run to compare with

    @pytest.mark.slow
    def test_options_side_by_side(self, tmp_path: Path) -> None:
        variants = "plain,channels_last,bf16,channels_last+bf16"
        proc = run_script("options.py", *TINY, "--variants", variants, tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows = table_rows(proc.stdout)
        assert list(rows) == variants.split(",")
        assert all(is_rate(cells[0]) for cells in rows.values()), proc.stdout
        assert rows["plain"][2] == "1.00x"

    @pytest.mark.slow
    def test_compile_gives_a_rate_or_a_reason(self, tmp_path: Path) -> None:
        proc = run_script("options.py", *TINY, "--variants", "plain,compile", "--timeout", "600", tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        cell = table_rows(proc.stdout)["compile"][0]
        assert is_rate(cell) or cell.startswith("failed: "), proc.stdout


class TestLoss:
    @pytest.mark.slow
    def test_cpu_table(self, tmp_path: Path) -> None:
        proc = run_script("loss.py", "--batch", "16", "--runs", "1", "--device", "cpu", tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        variants = ["lightning_supcon", "textbook", "pytorch_metric_learning", "matmul_bound"]
        supervision = [
            "class labels",
            "partial labels (50% -1)",
            "class_mean denominator",
            "weighted mask",
            "multi-hot",
        ]
        rows = table_rows(proc.stdout)
        assert list(rows) == [*variants, "supervision", *supervision]  # two tables; the second's header row
        assert rows["class labels"][2:4] == ["1.00x", "1.00x"]
        assert rows["partial labels (50% -1)"][0] == "fused" and rows["multi-hot"][0] == "explicit masks"


class TestLongTail:
    @pytest.mark.slow
    def test_quick_table(self, tmp_path: Path) -> None:
        proc = run_script("long_tail.py", "--quick", "--threads", "1", tmp_path=tmp_path, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows = [line for line in proc.stdout.splitlines() if line.startswith("| 10 |")]
        assert [row.split("|")[2].strip() for row in rows] == [
            "SupCon L_out",
            "L_out, class-averaged denominator (BCL)",
        ]


class TestGPUScript:
    def test_skips_cleanly_without_cuda(self, tmp_path: Path) -> None:
        proc = run_script("gpu.sh", tmp_path=tmp_path, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "no CUDA device: skipped"

    def test_a_broken_interpreter_is_an_error_not_a_skip(self, tmp_path: Path) -> None:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": str(tmp_path / "missing-python")}
        proc = subprocess.run(
            ["bash", str(BENCHMARKS / "gpu.sh")], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
        )
        assert proc.returncode != 0
        assert "skipped" not in proc.stdout


class TestDDPCPU:
    @pytest.mark.slow
    @pytest.mark.distributed
    def test_three_settings_in_one_table(self, tmp_path: Path) -> None:
        proc = run_script("ddp_cpu.py", "--batch", "16", "--steps", "8", tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows = [line.strip("|").split("|") for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
        assert [(r[0].strip(), r[1].strip(), r[2].strip()) for r in rows] == [
            ("1", "per process", "16"),
            ("2", "per process", "32"),
            ("2", "global (GlobalBatchNormSync)", "32"),
        ]
        assert all(is_rate(r[3]) for r in rows), proc.stdout


class TestMemoryQueue:
    @pytest.mark.slow  # three digits trainings of one epoch
    def test_every_setting_trains_the_no_queue_one_included(self, tmp_path: Path) -> None:
        """The "no queue" row crashed once the queue became a record (``Queue(size=0)`` is refused)."""
        proc = run_script("memory_queue.py", "--epochs", "1", "--seeds", "1", "--batch", "64", tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert list(table_rows(proc.stdout)) == ["no queue", "queue 1024", "queue 1024 + momentum encoder 0.99"]


@pytest.mark.slow  # two 1-epoch runs through the command (~30 s); `make test-slow` runs it
def test_ood_digits_prints_near_and_far(tmp_path: Path) -> None:
    proc = run_script("ood_digits.py", "--epochs", "1", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = table_rows(proc.stdout)
    assert list(rows) == ["near", "far"]
    assert all(0.0 <= float(cell) <= 1.0 for cells in rows.values() for cell in cells[:5]), proc.stdout
