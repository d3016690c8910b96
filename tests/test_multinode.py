"""Launching like a cluster: two processes as two nodes through the real CLI, and torchrun, on CPU with gloo."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "configs" / "digits.yaml")


def _cli_args(root: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        DIGITS,
        "--trainer.accelerator=cpu",
        "--trainer.strategy=ddp",
        "--trainer.max_steps=3",
        "--trainer.limit_val_batches=2",
        "--trainer.check_val_every_n_epoch=1",
        f"--trainer.default_root_dir={root}",
        "--data.init_args.batch_size=32",
        *extra,
    ]


def _global_batch(stdout: str) -> float:
    match = re.search(r"train/global_batch\s+([\d.]+)", stdout)
    assert match, stdout[-2000:]
    return float(match.group(1))


@pytest.mark.slow  # ~20 s; the torchrun test below covers DDP through the CLI in the fast suite
@pytest.mark.distributed
def test_two_nodes_one_device_each(tmp_path: Path) -> None:
    port = str(free_port())
    procs = []
    for node_rank in (0, 1):
        env = os.environ | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "NODE_RANK": str(node_rank)}
        env.pop("LOCAL_RANK", None)
        cmd = [
            sys.executable,
            "-m",
            "lightning_supcon",
            *_cli_args(tmp_path, "--trainer.num_nodes=2", "--trainer.devices=1"),
        ]
        procs.append(
            subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert _global_batch(outputs[0]) == 64.0  # 32 per node, both nodes in the loss
    checkpoints = sorted(p.name for p in tmp_path.rglob("version_*/checkpoints/*.ckpt"))
    assert checkpoints == ["epoch=0-step=3.ckpt", "last.ckpt"]


@pytest.mark.distributed
def test_torchrun_two_processes_with_the_cpu_ddp_config(tmp_path: Path) -> None:
    """``configs/trainer/ddp_cpu.yaml`` (DDP on CPU with the global BatchNorm plugin) through the real CLI."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "-m",
        "lightning_supcon",
        *_cli_args(tmp_path, "--trainer", str(ROOT / "configs" / "trainer" / "ddp_cpu.yaml")),
    ]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert _global_batch(result.stdout) == 64.0
