"""models/checkpoint.py: a file the user names runs no code unless trusted, and a damaged one is one clear error.

The crafted file holds a ``lightning_supcon`` entry, valid weights and a pickled callable (``open(marker, "w")``
through ``__reduce__``): unpickling it in full creates ``marker``. Loading without the opt-in must refuse it with
one ``ValueError`` naming the file and ``trust_checkpoint``, and create nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_supcon import OnlineEval, SupConModule
from lightning_supcon.encoder_files.export import export_encoder, save_encoder
from lightning_supcon.encoder_files.load import load_encoder
from lightning_supcon.encoder_files.read import load_encoder_checkpoint
from lightning_supcon.models import LinearProbeModule
from lightning_supcon.utils.files import FileReadError, read_torch_file
from tests.helpers import DIGITS_LINEAR, cli_error, one_error_line


class _Payload:
    """Unpickled in full, this opens (creates) ``marker``: a stand-in for any code a crafted file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, str]]:
        return open, (str(self.marker), "w")


@pytest.fixture
def encoder_file(tmp_path: Path) -> Path:
    return save_encoder(
        SupConModule(encoder="small_cnn", in_channels=1, online=OnlineEval(knn_k=0)), tmp_path / "encoder.pt"
    )


@pytest.fixture
def crafted(tmp_path: Path, encoder_file: Path) -> tuple[Path, Path]:
    """A SupCon encoder file plus a payload; returns the file and the marker the payload would create."""
    marker = tmp_path / "payload-ran"
    content = torch.load(encoder_file, weights_only=True) | {"payload": _Payload(marker)}
    path = tmp_path / "crafted.pt"
    torch.save(content, path)
    assert not marker.exists()
    return path, marker


def _damaged(kind: str, good: Path, tmp_path: Path) -> Path:
    data = good.read_bytes()
    content = {"empty": b"", "truncated": data[: len(data) // 2], "text": b"not a checkpoint\n" * 20}[kind]
    path = tmp_path / f"{kind}.ckpt"
    path.write_bytes(content)
    return path


LOADERS: dict[str, Callable[..., object]] = {
    "load_encoder_checkpoint": load_encoder_checkpoint,
    "export_encoder": lambda path, **kw: export_encoder(path, Path(path).parent / "out" / "encoder.pt", **kw),
    "read_torch_file": lambda path, trust_checkpoint=False: read_torch_file(path, trust=trust_checkpoint),
}


class TestNoCodeRunsUnlessTrusted:
    @pytest.mark.parametrize("loader", LOADERS)
    def test_crafted_file_is_refused_and_its_payload_never_runs(self, crafted: tuple[Path, Path], loader: str) -> None:
        path, marker = crafted
        with pytest.raises(ValueError, match="trust_checkpoint") as err:
            LOADERS[loader](path)
        assert str(path) in str(err.value) and re.search(r"references [\w.]*\bopen\b", str(err.value))
        assert "\n" not in str(err.value)
        assert not marker.exists()
        assert not (path.parent / "out").exists()  # export_encoder wrote nothing

    def test_linear_probe_refuses_it_too(self, crafted: tuple[Path, Path]) -> None:
        path, marker = crafted
        with pytest.raises(ValueError, match="trust_checkpoint"):
            LinearProbeModule(str(path), encoder="small_cnn", in_channels=1, num_classes=10)
        assert not marker.exists()

    def test_linear_probe_opt_in_loads_it(self, crafted: tuple[Path, Path], encoder_file: Path) -> None:
        path, marker = crafted
        probe = LinearProbeModule(str(path), encoder="small_cnn", in_channels=1, num_classes=10, trust_checkpoint=True)
        assert marker.exists()
        _, expected = load_encoder_checkpoint(encoder_file)
        assert all(torch.equal(probe.encoder.state_dict()[k], v) for k, v in expected.items())

    def test_the_opt_in_loads_it(self, crafted: tuple[Path, Path], encoder_file: Path) -> None:
        path, marker = crafted
        meta, weights = load_encoder_checkpoint(path, trust_checkpoint=True)
        assert marker.exists()  # only the explicit opt-in unpickles in full
        expected_meta, expected = load_encoder_checkpoint(encoder_file)
        assert meta == expected_meta
        assert weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in expected)
        out = export_encoder(path, path.parent / "exported.pt", trust_checkpoint=True)
        assert torch.load(out, weights_only=True).keys() == {"lightning_supcon", "state_dict"}

    def test_plain_weights_need_no_opt_in(self, encoder_file: Path) -> None:
        meta, weights = load_encoder_checkpoint(encoder_file)
        assert meta["kind"] == "supcon" and weights

    def test_cli_refuses_it_in_one_line(
        self, crafted: tuple[Path, Path], capsys: pytest.CaptureFixture[str], workdir: Path
    ) -> None:
        path, marker = crafted
        args = ["fit", "--config", DIGITS_LINEAR, "--trainer.fast_dev_run=true", f"--model.init_args.checkpoint={path}"]
        line = one_error_line(cli_error(capsys, args, workdir))
        assert str(path) in line and "trust_checkpoint" in line
        assert not marker.exists()


class TestDamagedFiles:
    @pytest.mark.parametrize("loader", LOADERS)
    @pytest.mark.parametrize("kind", ["empty", "truncated", "text"])
    @pytest.mark.parametrize("trust", [False, True])
    def test_one_value_error_naming_the_file(
        self, encoder_file: Path, tmp_path: Path, loader: str, kind: str, trust: bool
    ) -> None:
        path = _damaged(kind, encoder_file, tmp_path)
        with pytest.raises(FileReadError, match="Cannot read checkpoint") as err:
            LOADERS[loader](path, trust_checkpoint=trust)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
        assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)

    @pytest.mark.parametrize("kind", ["empty", "truncated", "text"])
    def test_every_reader_of_a_named_file_raises_the_one_error_type(
        self, encoder_file: Path, tmp_path: Path, kind: str
    ) -> None:
        """The kind: every place that reads a file a user names reads it through ``utils.files`` (one error type)."""
        from lightning_supcon.cli.runs import check_readable
        from lightning_supcon.evaluation.embeddings import load_embeddings
        from lightning_supcon.nets.weights import read_state_dict

        path = _damaged(kind, encoder_file, tmp_path)
        for reader in (load_encoder, read_state_dict, check_readable, load_embeddings, load_encoder_checkpoint):
            with pytest.raises(FileReadError, match=str(path.name)) as err:
                reader(path)
            assert "\n" not in str(err.value), reader

    @pytest.mark.parametrize("kind", ["empty", "truncated", "text"])
    def test_cli_reports_it_in_one_line(
        self, encoder_file: Path, tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str], workdir: Path
    ) -> None:
        path = _damaged(kind, encoder_file, tmp_path)
        args = ["fit", "--config", DIGITS_LINEAR, "--trainer.fast_dev_run=true", f"--model.init_args.checkpoint={path}"]
        line = one_error_line(cli_error(capsys, args, workdir))
        assert str(path) in line and "Cannot read checkpoint" in line

    @pytest.mark.parametrize("loader", LOADERS)
    def test_missing_file(self, tmp_path: Path, loader: str) -> None:
        with pytest.raises(FileNotFoundError, match="does not exist"):
            LOADERS[loader](tmp_path / "missing.ckpt")
