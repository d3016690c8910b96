"""The real-data test of the no-code sources: scikit-learn's digits written as PNG files, trained through the
command line with flags only, reach DigitsDataModule's accuracy on the same split with the same budget.

The budget is ``configs/digits.yaml``'s (small CNN, 30 epochs of batch 128, device augmentation, seed 0); the data
flags switch its DigitsDataModule for the class folders or the CSV list and restate the digits recipe
(``DIGITS_RECIPE``) and size (8x8 images resized to 16) as flags, with ``mean``/``std`` measured (``auto``). The
folder run is in the fast suite (the proof of issue 16 item 2); the CSV run, the same training on the same images
listed instead of sorted (its split is DigitsDataModule's, ``tests/data/test_csv_list.py``), is ``slow``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageOps

from lightning_supcon.cli import cli
from tests.data.formats import write_digits_list, write_digits_tree
from tests.helpers import DIGITS

#: DIGITS_RECIPE, the digits' 16 px size and measured statistics, as the flags a user types.
DIGITS_FLAGS = [
    "--data.channels=1",
    "--data.image_size=16",
    "--data.resize=16",
    "--data.mean=auto",
    "--data.std=auto",
    "--data.augment.scale=[0.5,1]",
    "--data.augment.ratio=[0.8,1.25]",
    "--data.augment.flip=false",
    "--data.augment.degrees=10",
    "--data.augment.translate=0.1",
    "--data.augment.colour=none",
    "--data.augment.blur_p=0",
]


def _fit(root: Path, data: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, float]:
    args = ["fit", "--config", DIGITS, f"--trainer.default_root_dir={root / 'run'}", "--trainer.callbacks=[]"]
    app = cli([*args, *data, *DIGITS_FLAGS])
    assert app.trainer.current_epoch == 30 and app.datamodule.batch_size == 128  # configs/digits.yaml's budget
    assert "Normalisation measured on 500 training images (split_seed 0)" in capsys.readouterr().out
    return {key: float(value) for key, value in app.trainer.callback_metrics.items()}


def test_class_folders_reach_digits_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With an OOD folder beside them, the validation digits' inverted copies (far OOD, flat in one folder): the
    same run logs the online OOD metrics of its encoder."""
    train, val = write_digits_tree(tmp_path / "digits")
    ood = tmp_path / "digits" / "inverted"
    ood.mkdir()
    for path in sorted(val.glob("*/*.png")):
        ImageOps.invert(Image.open(path)).save(ood / f"{path.parent.name}_{path.name}")
    folders = ["--data=lightning_supcon.ImageFolderDataModule", f"--data.train_dir={train}", f"--data.val_dir={val}"]
    metrics = _fit(tmp_path, [*folders, f"--data.ood_dir={ood}"], capsys)
    assert metrics["val/knn_top1"] >= 0.97 and metrics["val/probe_top1"] >= 0.97, metrics
    assert metrics["val/ood_auroc"] >= 0.9 and metrics["val/ood_fpr95"] <= 0.6, metrics  # measured: 0.939, 0.394


@pytest.mark.slow  # ~1 min like the folder run above, which proves the same path; `make test-slow`
def test_csv_list_reaches_digits_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listed = write_digits_list(tmp_path / "digits")
    csv = ["--data=lightning_supcon.CsvDataModule", f"--data.train_list={listed}", "--data.val_fraction=0.2"]
    metrics = _fit(tmp_path, csv, capsys)
    assert metrics["val/knn_top1"] >= 0.97 and metrics["val/probe_top1"] >= 0.97, metrics
