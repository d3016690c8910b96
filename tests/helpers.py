"""Small helpers shared by the tests."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a test's process group."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_trainer(root: Path, **kwargs: Any) -> pl.Trainer:
    """A quiet CPU Trainer (no logger, checkpoints, progress bar or summary) writing under ``root``."""
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": root,
    }
    return pl.Trainer(**(options | kwargs))
