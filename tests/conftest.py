"""Test-wide settings: CPU only, W&B offline and silent, no network."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("PL_DISABLE_FORK", "1")
