"""Fixtures of the data tests: small data sets in the real formats under ``tmp_path``, CPU only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.formats import write_cifar10, write_cifar100, write_image_tree

TREE = {
    "cat": ["rgb.png:RGB", "gray.png:L", "photo.jpg:RGB", "notes.txt:text"],
    "dog": ["rgba.png:RGBA", "palette.png:P", "gray.jpg:L"],
    "eel": ["a.png:RGB", "b.bmp:RGB"],
}


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    write_cifar10(tmp_path)
    return tmp_path


@pytest.fixture
def cifar100_root(tmp_path: Path) -> Path:
    write_cifar100(tmp_path)
    return tmp_path


@pytest.fixture
def image_tree(tmp_path: Path) -> tuple[Path, Path]:
    """``(train_dir, val_dir)``: 3 classes with RGB, grayscale, RGBA and palette PNG/JPEG/BMP images."""
    train = write_image_tree(tmp_path / "train", TREE)
    val = write_image_tree(tmp_path / "val", {"cat": ["v.png:RGB"], "eel": ["w.jpg:L", "x.png:RGBA"]})
    return train, val
