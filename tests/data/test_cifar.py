"""CIFAR-10/100 DataModules on small files in the real pickle format: pixels, labels, splits, clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from lightning_supcon.data import CIFAR10DataModule, CIFAR100DataModule
from lightning_supcon.data.cifar import CIFARDataModule
from lightning_supcon.data.loading import eval_order
from lightning_supcon.data.transforms import CIFAR10_MEAN, CIFAR100_MEAN
from tests.data.formats import cifar_rows


def _rows(folder: Path, name: str) -> tuple[np.ndarray, list[int]]:
    with open(folder / name, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    return entry["data"], entry.get("labels", entry.get("fine_labels"))


class TestCIFAR10:
    def test_pixels_and_labels(self, cifar10_root: Path) -> None:
        dm = CIFAR10DataModule(data_dir=str(cifar10_root))
        train, val = dm.dataset("train"), dm.dataset("val")
        assert (len(train), len(val)) == (20, 6)
        rows, labels = _rows(cifar10_root / "cifar-10-batches-py", "data_batch_2")
        image, label = train[4]  # first image of the second batch
        assert image.mode == "RGB" and image.size == (32, 32) and label == labels[0]
        pixels = np.asarray(image)
        assert pixels[0, 0, 0] == rows[0][0] and pixels[0, 0, 1] == rows[0][1024] and pixels[0, 0, 2] == rows[0][2048]
        assert pixels[3, 5, 1] == rows[0][1024 + 3 * 32 + 5]  # row-major planes: R, G, B

    def test_official_test_split_is_val_and_test(self, cifar10_root: Path) -> None:
        dm = CIFAR10DataModule(data_dir=str(cifar10_root), eval_batch_size=6)
        rows, labels = _rows(cifar10_root / "cifar-10-batches-py", "test_batch")
        images, got = next(iter(dm.test_dataloader()))
        order = eval_order(6)
        assert got.tolist() == [labels[i] for i in order]
        expected = (torch.from_numpy(rows[order, :1024]).view(6, 32, 32).float() / 255 - CIFAR10_MEAN[0]) / 0.2023
        torch.testing.assert_close(images[:, 0], expected)

    @pytest.mark.parametrize("n_views", [1, 2, 4])
    def test_train_batches(self, cifar10_root: Path, n_views: int) -> None:
        dm = CIFAR10DataModule(data_dir=str(cifar10_root), batch_size=8, n_views=n_views)
        views, labels = next(iter(dm.train_dataloader()))
        assert views.shape == (8, n_views, 3, 32, 32) and labels.dtype == torch.int64
        assert (dm.num_classes, dm.image_size, dm.augment.scale, dm.augment.blur_p > 0) == (10, 32, (0.2, 1.0), False)

    def test_device_path_decodes_to_uint8(self, cifar10_root: Path) -> None:
        dm = CIFAR10DataModule(data_dir=str(cifar10_root), batch_size=8, augment_on="device")
        images, _ = next(iter(dm.train_dataloader()))
        assert images.shape == (8, 3, 32, 32) and images.dtype == torch.uint8

    def test_missing_files(self, tmp_path: Path) -> None:
        dm = CIFAR10DataModule(data_dir=str(tmp_path))
        expected = str(tmp_path / "cifar-10-batches-py")
        with pytest.raises(
            FileNotFoundError, match=rf"data_batch_1.*test_batch'\] in '{expected}'.*download=True.*tar\.gz"
        ):
            dm.train_dataloader()
        dm.prepare_data()  # download off: nothing to do, no network

    def test_one_missing_batch(self, cifar10_root: Path) -> None:
        (cifar10_root / "cifar-10-batches-py" / "data_batch_3").unlink()
        with pytest.raises(FileNotFoundError, match=r"expected the files \['data_batch_3'\] in"):
            CIFAR10DataModule(data_dir=str(cifar10_root)).dataset("val")

    def test_failed_download(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        def offline(*args: object, **kwargs: object) -> None:
            raise OSError("no network")

        monkeypatch.setattr(CIFAR10DataModule, "torchvision_class", offline)
        monkeypatch.setattr(offline, "url", "https://example.invalid/cifar.tar.gz", raising=False)
        with pytest.raises(RuntimeError, match=r"Downloading CIFAR10DataModule into .* failed: no network"):
            CIFAR10DataModule(data_dir=str(tmp_path), download=True).prepare_data()

    def test_download_skipped_when_present(self, cifar10_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(CIFAR10DataModule, "torchvision_class", None)  # would fail if called
        CIFAR10DataModule(data_dir=str(cifar10_root), download=True).prepare_data()


class TestCIFAR100:
    def test_fine_labels(self, cifar100_root: Path) -> None:
        dm = CIFAR100DataModule(data_dir=str(cifar100_root), eval_batch_size=5)
        assert (len(dm.dataset("train")), dm.num_classes) == (12, 100)
        _, labels = _rows(cifar100_root / "cifar-100-python", "test")
        images, got = next(iter(dm.val_dataloader()))
        assert got.tolist() == [labels[i] for i in eval_order(5)] and images.shape == (5, 3, 32, 32)
        assert dm.mean == CIFAR100_MEAN

    def test_train_batches(self, cifar100_root: Path) -> None:
        views, _ = next(iter(CIFAR100DataModule(data_dir=str(cifar100_root), batch_size=4).train_dataloader()))
        assert views.shape == (4, 2, 3, 32, 32)

    def test_missing(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*cifar-100-python\.tar\.gz"):
            CIFAR100DataModule(data_dir=str(tmp_path)).dataset("train")


def test_base_reader_is_shared() -> None:
    assert issubclass(CIFAR10DataModule, CIFARDataModule) and issubclass(CIFAR100DataModule, CIFARDataModule)
    assert cifar_rows(2, 0).shape == (2, 3072)
    assert isinstance(CIFAR10DataModule().eval_transform(), v2.Compose)
