"""``lightning-supcon-eval`` end to end: fit a tiny digits model, ``predict`` the training and validation splits, score
the two files without the model; one error line for files that cannot be used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.neighbors import KNeighborsClassifier

from lightning_supcon.callbacks import EmbeddingWriter
from lightning_supcon.cli import main as supcon
from lightning_supcon.evaluate import main
from lightning_supcon.evaluation import METRICS, OOD_METRICS, evaluate_embeddings, load_embeddings, ood_scores
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


def test_subsample_the_plot_to_plot_points_stratified_and_said_in_the_title(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # --plot ran the reduction on every test sample (t-SNE: ~55 s for 10,000); now on at most --plot-points.
    import lightning_supcon.evaluate as evaluate

    drawn: list[tuple[int, Any, str]] = []

    def spy(points: np.ndarray, labels: Any, path: Any, title: str = "", class_names: Any = None) -> Path:
        drawn.append((len(points), torch.as_tensor(labels), title))
        return Path(path)

    monkeypatch.setattr(evaluate, "plot_embedding", spy)
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", 60), ("val", 500)):
        torch.save(
            {"features": torch.randn(n, 4, generator=gen), "labels": torch.arange(n) % 5}, tmp_path / f"{split}.pt"
        )
    args = [
        "--train",
        str(tmp_path / "train.pt"),
        "--test",
        str(tmp_path / "val.pt"),
        "--plot",
        str(tmp_path / "m.png"),
    ]
    main([*args, "--plot-method", "pca", "--plot-points", "50", "--seed", "3"])
    ((count, labels, title),) = drawn
    assert count == 50 and torch.bincount(labels).tolist() == [10] * 5
    assert title == "PCA of val.pt (50 of 500, class-balanced, seed 3; features)"
    with pytest.raises(SystemExit):
        main([*args, "--plot-points", "2"])
    assert capsys.readouterr().err.strip().endswith("Expected --plot-points >= 3 (a map needs 3 points), but got 2")


def _write_ood_files(folder: Path, ood_dim: int = 6) -> None:
    """Embeddings of 3 splits written by EmbeddingWriter itself (``.pt`` and ``.npz``): train and val from 3 clusters,
    ``ood`` from 2 clusters of its own, labelled -1, with float32 ``features`` and ``projections``."""
    gen = torch.Generator().manual_seed(0)
    centres = 2 * torch.randn(5, 6, generator=gen)
    writer = EmbeddingWriter(output_dir=str(folder))
    for stem, n, first in (("embeddings_train", 120, 0), ("embeddings_val", 40, 0), ("embeddings_ood", 30, 3)):
        labels = first + torch.arange(n) % (3 if first == 0 else 2)
        features = (centres[labels] + torch.randn(n, 6, generator=gen))[:, : 6 if first == 0 else ood_dim]
        writer._save(
            {"features": features, "projections": features.flip(1), "labels": labels if first == 0 else -labels.sign()},
            stem,
        )


def test_ood_file_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_ood_files(tmp_path)
    capsys.readouterr()
    train, val, ood = tmp_path / "embeddings_train.pt", tmp_path / "embeddings_val.npz", tmp_path / "embeddings_ood.pt"
    main(["--train", str(train), "--test", str(val), "--ood", str(ood), "--ood-k", "5", "--k", "10"])
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["ood"] == str(ood) and report["sizes"]["ood"] == 30 and report["settings"]["ood_k"] == 5
    assert list(report["metrics"]) == [*(name for name in METRICS if name != "knn_top5"), *OOD_METRICS]
    expected = ood_scores(load_embeddings(train), load_embeddings(val), load_embeddings(ood), k=5)
    assert {name: report["metrics"][name] for name in OOD_METRICS} == pytest.approx(expected, abs=1e-12)
    assert 0.5 < report["metrics"]["ood_auroc"] < 1.0
    assert f"out-of-distribution: {ood} (30), scored by the distance to the 5-th training neighbour" in printed
    for name, description in OOD_METRICS.items():
        assert f"| {description}" in printed and f"{100 * report['metrics'][name]:.2f} |" in printed
    # The AUROC from the files alone: the 5-th smallest Euclidean distance of normalised features, ranked by hand.
    bank, queries = (F.normalize(load_embeddings(path).features.double(), dim=1) for path in (train, val))
    outliers = F.normalize(load_embeddings(ood).features.double(), dim=1)
    kth = [-torch.cdist(x, bank).sort(dim=1).values[:, 4] for x in (queries, outliers)]
    pairs = (kth[0][:, None] > kth[1][None, :]).double() + 0.5 * (kth[0][:, None] == kth[1][None, :]).double()
    assert report["metrics"]["ood_auroc"] == pytest.approx(pairs.mean().item(), abs=1e-6)
    # The default k (50) and another key; without --ood no OOD metric.
    files = ["--train", str(train), "--test", str(val)]
    main([*files, "--ood", str(ood), "--key", "projections", "--json", str(tmp_path / "p.json")])
    assert json.loads((tmp_path / "p.json").read_text())["settings"]["ood_k"] == 50
    main(files)
    assert not set(OOD_METRICS) & set(json.loads((tmp_path / "evaluation.json").read_text())["metrics"])


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

    def test_multilabel_embeddings_report_the_multilabel_metrics(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # It refused multi-hot labels; it now reports what the online evaluation logs (val/knn_map, ...).
        from lightning_supcon.evaluate import main

        gen = torch.Generator().manual_seed(0)
        for split, n in (("train", 40), ("val", 12)):
            labels = (torch.rand(n, 3, generator=gen) < 0.5).float()  # float 0/1 targets, as a multi-label set's
            features = labels @ torch.eye(3, 5) + 0.05 * torch.randn(n, 5, generator=gen)
            torch.save({"features": features, "labels": labels}, tmp_path / f"embeddings_{split}.pt")
        main(["--train", str(tmp_path / "embeddings_train.pt"), "--test", str(tmp_path / "embeddings_val.pt")])
        out = capsys.readouterr().out
        assert "3 labels per sample (multi-label)" in out and "multi-label kNN mAP" in out
        report = json.loads((tmp_path / "evaluation.json").read_text())
        assert report["metrics"]["knn_map"] == 1.0 and report["metrics"]["knn_accuracy"] == 1.0
        assert "kmeans_nmi" not in report["metrics"] and report["sizes"]["labels"] == 3

    def test_an_ood_file_of_another_model(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        _write_ood_files(tmp_path, ood_dim=4)
        args = ["--train", str(tmp_path / "embeddings_train.pt"), "--test", str(tmp_path / "embeddings_val.pt")]
        line = self._error(capsys, [*args, "--ood", str(tmp_path / "embeddings_ood.pt")])
        assert "training and out-of-distribution embeddings have different feature sizes (6 in" in line
        line = self._error(capsys, [*args, "--ood", str(tmp_path / "missing.pt")])
        assert line.endswith("missing.pt: no such file (write it with `lightning-supcon predict`).")
        line = self._error(capsys, [*args, "--ood", str(tmp_path / "embeddings_val.pt"), "--ood-k", "0"])
        assert line.endswith("Expected --ood-k to be a positive integer, but got 0")
        assert not (tmp_path / "evaluation.json").exists()

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
