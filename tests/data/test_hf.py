"""HFDataModule: a ``datasets`` table saved to disk or as local parquet files, named columns, labels, the extra."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_supcon.data import HFDataModule

datasets = pytest.importorskip("datasets")


def _images(n: int, mode: str = "RGB") -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).convert(mode) for _ in range(n)]


def _table(labels: list, label_feature: object = None) -> object:
    features = datasets.Features(
        {"img": datasets.Image(), "fine": label_feature or datasets.Value("int64"), "note": datasets.Value("string")}
    )
    rows = {"img": _images(len(labels)), "fine": labels, "note": ["x"] * len(labels)}
    return datasets.Dataset.from_dict(rows, features=features)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def _dm(path: str, **kwargs: object) -> HFDataModule:
    return HFDataModule(path, image_column="img", label_column="fine", image_size=8, batch_size=4, **kwargs)  # type: ignore[arg-type]


class TestSources:
    def test_saved_dataset_dict_with_class_label(self, tmp_path: Path) -> None:
        names = ["ant", "bee", "cow"]
        tables = datasets.DatasetDict(
            {
                "train": _table([0, 1, 2, 0, 1, 2, 0, 1], datasets.ClassLabel(names=names)),
                "test": _table([2, 1], datasets.ClassLabel(names=names)),
            }
        )
        tables.save_to_disk(str(tmp_path / "saved"))
        dm = _dm(str(tmp_path / "saved"), val_split="test", channels=1, mean="auto", std="auto")
        assert (dm.classes, dm.num_classes, dm.in_channels) == (names, 3, 1)
        views, labels = next(iter(dm.train_dataloader()))
        assert views.shape == (4, 2, 1, 8, 8)
        images, labels = next(iter(dm.val_dataloader()))  # type: ignore[call-overload]
        assert images.shape == (2, 1, 8, 8) and labels.tolist() == [2, 1]

    def test_saved_single_dataset_is_the_training_split(self, tmp_path: Path) -> None:
        _table(["b", "a"] * 5, datasets.Value("string")).save_to_disk(str(tmp_path / "one"))
        dm = _dm(str(tmp_path / "one"), val_fraction=0.2)
        assert dm.classes == ["a", "b"] and (len(dm.dataset("train")), len(dm.dataset("val"))) == (8, 2)

    def test_local_parquet_files(self, tmp_path: Path) -> None:
        _table([0, 1, 0, 1, 1, 0]).to_parquet(str(tmp_path / "train.parquet"))
        _table([1, 0]).to_parquet(str(tmp_path / "val.parquet"))
        files = {"train": str(tmp_path / "train.parquet"), "validation": str(tmp_path / "val.parquet")}
        dm = _dm("parquet", data_files=files, val_split="validation", cache_dir=str(tmp_path / "cache"))
        assert dm.classes == ["0", "1"]
        batch = next(iter(dm.val_dataloader()))  # type: ignore[call-overload]
        expected = torch.stack([dm.eval_transform()(image.convert("RGB")) for image in _images(2)])
        torch.testing.assert_close(batch[0], expected)
        assert batch[1].tolist() == [1, 0]

    def test_image_paths_are_cast_to_images(self, tmp_path: Path) -> None:
        paths = []
        for i, image in enumerate(_images(4, "L")):
            image.save(tmp_path / f"{i}.png")
            paths.append(str(tmp_path / f"{i}.png"))
        datasets.Dataset.from_dict({"img": paths, "fine": [0, 1, 0, 1]}).save_to_disk(str(tmp_path / "paths"))
        image, label = _dm(str(tmp_path / "paths"), val_fraction=0.5).dataset("train")[0]
        assert image.mode == "RGB" and image.size == (10, 12) and label in (0, 1)

    def test_ood_split_without_labels(self, tmp_path: Path) -> None:
        images = datasets.Dataset.from_dict({"img": _images(3)}, features=datasets.Features({"img": datasets.Image()}))
        datasets.DatasetDict({"train": _table([0, 1] * 4), "far": images}).save_to_disk(str(tmp_path / "saved"))
        dm = _dm(str(tmp_path / "saved"), ood_split="far", val_fraction=0.25)
        loader = dm.ood_dataloader()
        assert loader is not None
        batch, labels = next(iter(loader))
        expected = torch.stack([dm.eval_transform()(image) for image in _images(3)])
        torch.testing.assert_close(batch, expected)
        assert labels.tolist() == [-1, -1, -1] and dm.classes == ["0", "1"]


class TestErrors:
    def test_missing_split_and_column(self, tmp_path: Path) -> None:
        _table([0, 1] * 4).save_to_disk(str(tmp_path / "one"))
        with pytest.raises(ValueError, match=r"Expected a split 'validation' in .* but it has \['train'\]"):
            _dm(str(tmp_path / "one"), val_split="validation").dataset("val")
        dm = HFDataModule(str(tmp_path / "one"))
        with pytest.raises(ValueError, match=r"a column 'image' in split 'train' .* \['img', 'fine', 'note'\]"):
            _ = dm.num_classes

    def test_a_path_that_is_no_folder_is_not_looked_up_on_the_hub(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import datasets

        def no_network(*args: object, **kwargs: object) -> None:
            raise AssertionError("load_dataset was called: a misspelt folder would go to the Hugging Face Hub")

        monkeypatch.setattr(datasets, "load_dataset", no_network)
        with pytest.raises(FileNotFoundError, match=r"'.*no_such_folder' is none of these \(nothing is downloaded\)"):
            _ = HFDataModule(str(tmp_path / "no_such_folder")).num_classes

    def test_without_the_extra_names_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "datasets", None)  # what an environment without the package gives
        with pytest.raises(ImportError, match=r"needs the Hugging Face `datasets` package.*lightning-supcon\[hf\]"):
            HFDataModule("anything")
