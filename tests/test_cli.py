"""The ``lightning-supcon`` command: short errors, config printing, a real run through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lightning_supcon.cli import cli, main

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "configs" / "digits.yaml")


def _fast(tmp_path: Path) -> list[str]:
    return [
        "--trainer.fast_dev_run=true",
        f"--trainer.default_root_dir={tmp_path}",
        "--data.init_args.batch_size=32",
    ]


class TestCLI:
    def test_typo_in_config_key_is_a_short_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exc:
            main(["fit", "--config", DIGITS, "--model.init_args.temprature=0.2"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "'temprature' is not accepted" in err
        assert "Traceback" not in err
        assert len(err.splitlines()) < 15

    def test_user_error_is_one_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exc:
            main(["fit", "--config", DIGITS, *_fast(tmp_path), "--data.init_args.batch_size=5000"])
        assert exc.value.code == 2
        err_lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert err_lines == [err_lines[0]] and "lightning-supcon: error:" in err_lines[0]
        assert "batch_size" in err_lines[0]

    def test_debug_env_shows_the_exception(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LIGHTNING_SUPCON_DEBUG", "1")
        with pytest.raises(ValueError, match="batch_size"):
            main(["fit", "--config", DIGITS, *_fast(tmp_path), "--data.init_args.batch_size=5000"])

    def test_print_config_links_num_classes(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exc:
            main(["fit", "--config", DIGITS, "--print_config"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "class_path: lightning_supcon.SupConModule" in out
        assert "temperature: 0.1" in out

    def test_instantiation_links_data_into_model(self) -> None:
        app = cli(["--config", DIGITS], run=False)
        assert app.model.hparams["num_classes"] == 10
        assert app.model.hparams["in_channels"] == 1

    def test_fit_then_validate_from_checkpoint(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        main(["fit", "--config", DIGITS, *_fast(tmp_path)])
        assert "val/probe_top1" in capsys.readouterr().out
        main(["test", "--config", DIGITS, *_fast(tmp_path)])

    def test_module_entry_point(self) -> None:
        out = subprocess.run(
            [sys.executable, "-m", "lightning_supcon", "--help"], capture_output=True, text=True, check=True
        ).stdout
        assert "fit" in out and "validate" in out and "predict" in out
