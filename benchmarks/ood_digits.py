"""The worked example of docs/evaluation.md: online OOD metrics of a SupCon run on digits 0-4 as class folders.

    python benchmarks/ood_digits.py                 # near (digits 5-9) and far (inverted digits) OOD, 30 epochs each
    python benchmarks/ood_digits.py --epochs 2      # a smoke run

Writes scikit-learn's digits as 8x8 grayscale PNG files: digits 0-4 in class folders (80% training, 20% validation,
stratified, seed 0), the 896 images of digits 5-9 in one flat folder (near OOD) and the validation images inverted
(far OOD); then runs ``lightning-supcon fit`` with the digits config and the folder flags of the docs once per OOD
folder, and prints the last validation's kNN top-1 and OOD metrics from the run's ``metrics.csv`` with the wall time
of each run. Runtime: two runs of about 25 s on the 2-core development CPU.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parents[1]
#: The digits recipe as the flags of the folder source (docs/evaluation.md, docs/own-data.md).
FOLDER_FLAGS = [
    *("--data.channels", "1", "--data.image_size", "16", "--data.resize", "16"),
    *("--data.mean", "auto", "--data.std", "auto", "--data.augment.scale", "[0.5,1]"),
    *("--data.augment.ratio", "[0.8,1.25]", "--data.augment.flip", "false", "--data.augment.degrees", "10"),
    *("--data.augment.translate", "0.1", "--data.augment.colour", "none", "--data.augment.blur_p", "0"),
]
METRICS = ("val/knn_top1", "val/ood_auroc", "val/ood_aupr_in", "val/ood_aupr_out", "val/ood_fpr95")


def write_folders(root: Path) -> None:
    """``root/{train,val}/<digit>/`` for digits 0-4, ``root/near/`` (digits 5-9) and ``root/far/`` (inverted val)."""
    digits = load_digits()
    images = np.round(digits.images * 255 / 16).astype(np.uint8)  # (1797, 8, 8)
    known = np.flatnonzero(digits.target < 5)
    train, val = train_test_split(known, test_size=0.2, stratify=digits.target[known], random_state=0)
    for split, indices in (("train", train), ("val", val)):
        for i in indices:
            (root / split / str(digits.target[i])).mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], "L").save(root / split / str(digits.target[i]) / f"{i:04d}.png")
    for name, indices, invert in (("near", np.flatnonzero(digits.target >= 5), False), ("far", val, True)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in indices:
            Image.fromarray(255 - images[i] if invert else images[i], "L").save(root / name / f"{i:04d}.png")


def run(root: Path, ood: str, epochs: int) -> tuple[dict[str, float], float]:
    """One ``fit`` with ``ood_dir`` = ``root/ood``: the last validation's :data:`METRICS` and the wall seconds."""
    command = [sys.executable, "-m", "lightning_supcon", "fit", "--config", str(ROOT / "configs" / "digits.yaml")]
    command += ["--data", "lightning_supcon.ImageFolderDataModule", "--data.train_dir", str(root / "train")]
    command += ["--data.val_dir", str(root / "val"), "--data.ood_dir", str(root / ood), *FOLDER_FLAGS]
    command += ["--trainer.max_epochs", str(epochs), "--trainer.default_root_dir", str(root / "runs" / ood)]
    command += ["--trainer.enable_progress_bar", "false"]  # the config's callbacks kept, as the docs run it
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    with open(root / "runs" / ood / "version_0" / "metrics.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("val/ood_auroc")]
    return {name: float(rows[-1][name]) for name in METRICS}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30, help="training epochs of each run (the digits config: 30)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_folders(root)
        print("| OOD set | " + " | ".join(METRICS) + " | seconds |")
        print("|---" * (len(METRICS) + 2) + "|")
        for ood in ("near", "far"):
            metrics, seconds = run(root, ood, args.epochs)
            print(f"| {ood} | " + " | ".join(f"{metrics[name]:.4f}" for name in METRICS) + f" | {seconds:.0f} |")


if __name__ == "__main__":
    main()
