"""SaveConfigToLoggers: every fit run keeps its own resolved ``config.yaml``, whatever the logger."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lightning_supcon.cli import main
from tests.helpers import DIGITS

SMALL = [
    "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]", "--data.init_args.batch_size=32",
]  # fmt: skip


@pytest.mark.parametrize("logger", ["false", "true"], ids=["no-logger", "default-logger"])
def test_each_run_writes_its_config_into_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logger: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for seed in (1, 2):
        main(["fit", "--config", DIGITS, *SMALL, f"--trainer.logger={logger}", f"--seed_everything={seed}"])
    root = tmp_path / "outputs" / "digits"
    assert not (root / "config.yaml").exists()  # no file shared by the runs
    for version, seed in ((0, 1), (1, 2)):
        config = yaml.safe_load((root / f"version_{version}" / "config.yaml").read_text())
        assert config["seed_everything"] == seed
        assert (root / f"version_{version}" / "checkpoints" / "last.ckpt").exists()
