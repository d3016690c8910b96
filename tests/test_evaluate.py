"""``lightning-supcon-eval`` end to end: fit a tiny digits model, ``predict`` the training and validation splits, score
the two files without the model; one error line for files that cannot be used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from lightning_supcon.cli import main as supcon
from lightning_supcon.evaluate import main
from lightning_supcon.evaluation import METRICS, evaluate_embeddings, load_embeddings
from tests.helpers import DIGITS

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=0",
    "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]", "--data.init_args.batch_size=64",
]  # fmt: skip


def test_predict_two_splits_then_evaluate_without_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-supcon"])
    supcon(["fit", "--config", DIGITS, *TINY])
    out = tmp_path / "emb"
    for split in ("train", "val"):
        writer = [
            "--trainer.callbacks+=lightning_supcon.callbacks.EmbeddingWriter",
            f"--trainer.callbacks.output_dir={out}",
        ]
        supcon(
            ["predict", "--config", DIGITS, "--ckpt_path", "last", f"--data.init_args.predict_split={split}", *writer]
        )
    printed = capsys.readouterr().out
    for split, rows in (("train", 1437), ("val", 360)):  # the digits' 80/20 split
        assert (
            f"Embeddings: {out / f'embeddings_{split}'}.pt and .npz ({rows} rows: features, projections, labels), "
            "class_names" in (printed)
        )
    train, val = out / "embeddings_train.pt", out / "embeddings_val.npz"  # either format
    main(
        ["--train", str(train), "--test", str(val), "--k", "20", "--plot", str(out / "map.png"), "--plot-method", "pca"]
    )
    printed = capsys.readouterr().out
    report = json.loads((out / "evaluation.json").read_text())  # beside --test by default
    assert report["train"] == str(train) and report["test"] == str(val) and report["key"] == "features"
    assert report["sizes"] == {"train": 1437, "test": 360, "dim": 128, "classes": 10}
    assert set(report["metrics"]) == set(METRICS)
    expected = evaluate_embeddings(load_embeddings(train), load_embeddings(val), k=20)
    assert report["metrics"] == pytest.approx(expected["metrics"])
    for name, description in METRICS.items():
        assert f"| {description}" in printed and f"{100 * report['metrics'][name]:.2f} |" in printed
    assert f"JSON: {out / 'evaluation.json'}" in printed and (out / "map.png").read_bytes()[:4] == b"\x89PNG"
    # The kNN as scikit-learn computes it, from the files alone.
    bank, queries = load_embeddings(train), load_embeddings(val)
    knn = KNeighborsClassifier(20, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1 - d) / 0.07))
    predicted = knn.fit(bank.features.double().numpy(), bank.labels.numpy()).predict(queries.features.double().numpy())
    assert report["metrics"]["knn_top1"] == pytest.approx(float((predicted == queries.labels.numpy()).mean()), abs=1e-6)
    # The projections instead of the encoder features, and a JSON path of one's own.
    main(["--train", str(train), "--test", str(val), "--key", "projections", "--json", str(tmp_path / "p.json")])
    assert json.loads((tmp_path / "p.json").read_text())["sizes"]["dim"] == 128


class TestErrors:
    def _error(self, capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lightning-supcon-eval: error: "), lines
        return lines[0]

    def test_missing_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        torch.save({"features": torch.randn(3, 4), "labels": torch.arange(3)}, tmp_path / "val.pt")
        line = self._error(capsys, ["--train", str(tmp_path / "train.pt"), "--test", str(tmp_path / "val.pt")])
        assert line.endswith("train.pt: no such file (write it with `lightning-supcon predict`).")
        assert not (tmp_path / "evaluation.json").exists()

    def test_mismatched_files(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        torch.save({"features": torch.randn(3, 4), "labels": torch.arange(3)}, tmp_path / "train.pt")
        torch.save({"features": torch.randn(3, 8), "labels": torch.arange(3)}, tmp_path / "val.pt")
        line = self._error(capsys, ["--train", str(tmp_path / "train.pt"), "--test", str(tmp_path / "val.pt")])
        assert "different feature sizes (4 in" in line and "were they written by the same model?" in line

    def test_a_metric_without_enough_samples_is_null_in_strict_json(self, tmp_path: Path) -> None:
        from lightning_supcon.evaluate import parser, run

        torch.save({"features": torch.randn(8, 4), "labels": torch.arange(8) % 2}, tmp_path / "train.pt")
        torch.save({"features": torch.randn(2, 4), "labels": torch.arange(2)}, tmp_path / "val.pt")  # one per class
        run(parser().parse_args(["--train", str(tmp_path / "train.pt"), "--test", str(tmp_path / "val.pt")]))
        text = (tmp_path / "evaluation.json").read_text()
        report = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
        assert report["metrics"]["precision_at_1"] is None  # no test class has two samples

    def test_a_checkpoint_instead_of_embeddings(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        (tmp_path / "last.ckpt").write_bytes(b"x")
        line = self._error(capsys, ["--train", str(tmp_path / "last.ckpt"), "--test", str(tmp_path / "last.ckpt")])
        assert "Expected an embeddings file ending in .pt or .npz, but got" in line

    @pytest.mark.slow  # a second interpreter start (~13 s): the same main() the console-script tests run
    def test_module_form_reports_the_same_error(self, tmp_path: Path) -> None:
        cmd = [sys.executable, "-m", "lightning_supcon.evaluate", "--train", "a.pt", "--test", "b.pt"]
        proc = subprocess.run(
            cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(ROOT)}
        )
        assert proc.returncode == 2 and proc.stderr.strip().startswith("lightning-supcon-eval: error: Cannot read")


def test_console_script_is_declared() -> None:
    assert "lightning-supcon-eval = lightning_supcon.evaluate:main" in (ROOT / "setup.cfg").read_text()
