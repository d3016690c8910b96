"""ImageFolderDataModule on a small PNG/JPEG/BMP tree: RGB conversion, corrupt files, bad trees, both paths."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import Tensor

from lightning_supcon.callbacks import EmbeddingWriter
from lightning_supcon.callbacks.embedding_map import plot_embedding
from lightning_supcon.data import ImageFolderDataModule, eval_transform, load_image, scan_folder
from lightning_supcon.data.loading import eval_order
from lightning_supcon.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lightning_supcon.evaluation import evaluate_embeddings, format_table, load_embeddings
from tests import helpers
from tests.data.formats import write_image_tree


def _dm(tree: tuple[Path, Path], **kwargs: object) -> ImageFolderDataModule:
    return ImageFolderDataModule(str(tree[0]), str(tree[1]), image_size=16, **kwargs)  # type: ignore[arg-type]


class TestScan:
    def test_classes_and_samples(self, image_tree: tuple[Path, Path]) -> None:
        classes, samples = scan_folder(image_tree[0])
        assert classes == ["cat", "dog", "eel"]
        names = [(Path(path).name, label) for path, label in samples]
        assert names == [
            ("gray.png", 0),
            ("photo.jpg", 0),
            ("rgb.png", 0),
            ("gray.jpg", 1),
            ("palette.png", 1),
            ("rgba.png", 1),
            ("a.png", 2),
            ("b.bmp", 2),
        ]  # notes.txt is not an image

    def test_hidden_folders_are_no_classes(self, tmp_path: Path) -> None:
        write_image_tree(tmp_path, {"cat": ["1.png:RGB"], "dog": ["1.png:RGB"], ".ipynb_checkpoints": ["1.png:RGB"]})
        classes, samples = scan_folder(tmp_path)
        assert classes == ["cat", "dog"] and len(samples) == 2

    def test_val_indexed_by_train_classes(self, image_tree: tuple[Path, Path]) -> None:
        _, samples = scan_folder(image_tree[1], ["cat", "dog", "eel"])
        assert sorted(label for _, label in samples) == [0, 2, 2]

    def test_missing_directory(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match=f"'{tmp_path / 'nope'}' is not one"):
            scan_folder(tmp_path / "nope")

    def test_no_class_folders(self, tmp_path: Path) -> None:
        (tmp_path / "loose.png").write_bytes(b"")
        with pytest.raises(ValueError, match=f"sub-folder per class in '{tmp_path}', but it has none"):
            scan_folder(tmp_path)

    def test_empty_class_folder(self, tmp_path: Path) -> None:
        write_image_tree(tmp_path, {"a": ["x.png:RGB"], "b": ["readme.txt:text"]})
        with pytest.raises(ValueError, match=f"in '{tmp_path / 'b'}', found none"):
            scan_folder(tmp_path)

    def test_val_class_missing_from_train(self, image_tree: tuple[Path, Path]) -> None:
        write_image_tree(image_tree[1], {"fox": ["f.png:RGB"]})
        with pytest.raises(ValueError, match=f"'{image_tree[1] / 'fox'}' is not a class of the training set"):
            _dm(image_tree).dataset("val")


class TestImages:
    @pytest.mark.parametrize("file", ["cat/gray.png", "cat/photo.jpg", "dog/rgba.png", "dog/palette.png", "eel/b.bmp"])
    def test_rgb(self, image_tree: tuple[Path, Path], file: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # palette transparency must not warn
            image = load_image(str(image_tree[0] / file))
        assert image.mode == "RGB" and image.size == (20, 14)

    def test_grayscale_channels_equal(self, image_tree: tuple[Path, Path]) -> None:
        r, g, b = load_image(str(image_tree[0] / "cat" / "gray.png")).split()
        assert r.tobytes() == g.tobytes() == b.tobytes()

    def test_corrupt_raises_naming_the_file(self, image_tree: tuple[Path, Path]) -> None:
        write_image_tree(image_tree[0], {"dog": ["broken.png:corrupt"]})
        dm = _dm(image_tree, batch_size=2)
        with pytest.raises(OSError, match=r"Cannot read image file '.*dog/broken\.png'"):
            list(dm.train_eval_dataloader())

    def test_skip_corrupt_warns_once_with_count(self, image_tree: tuple[Path, Path]) -> None:
        write_image_tree(image_tree[0], {"dog": ["broken.png:corrupt"], "eel": ["bad.jpg:corrupt"]})
        (image_tree[0] / "cat" / "cut.png").write_bytes((image_tree[0] / "cat" / "rgb.png").read_bytes()[:60])
        dm = _dm(image_tree, batch_size=2, skip_corrupt=True)
        with pytest.warns(UserWarning, match="Skipped 3 unreadable image") as record:
            labels = torch.cat([labels for _, labels in dm.train_eval_dataloader()])
            next(iter(dm.train_dataloader()))
        assert len(record) == 1 and len(labels) == 8

    def test_skip_corrupt_all_bad(self, tmp_path: Path) -> None:
        write_image_tree(tmp_path / "t", {"a": ["x.png:corrupt"]})
        dm = ImageFolderDataModule(str(tmp_path / "t"), str(tmp_path / "t"), skip_corrupt=True)
        with pytest.warns(UserWarning), pytest.raises(ValueError, match="all 1 are unreadable"):
            dm.dataset("train")


class TestDataModule:
    def test_recipe(self, image_tree: tuple[Path, Path]) -> None:
        dm = _dm(image_tree)
        assert (dm.num_classes, dm.classes, dm.mean, dm.std) == (3, ["cat", "dog", "eel"], IMAGENET_MEAN, IMAGENET_STD)
        assert (dm.augment.scale, dm.augment.blur_p > 0, dm.resize) == ((0.08, 1.0), True, 18)
        assert ImageFolderDataModule("a", "b").resize == 256

    @pytest.mark.parametrize("n_views", [1, 2, 4])
    def test_train_batches(self, image_tree: tuple[Path, Path], n_views: int) -> None:
        views, labels = next(iter(_dm(image_tree, batch_size=4, n_views=n_views).train_dataloader()))
        assert views.shape == (4, n_views, 3, 16, 16) and labels.shape == (4,)

    def test_val_is_resize_and_center_crop(self, image_tree: tuple[Path, Path]) -> None:
        dm = _dm(image_tree, batch_size=4)
        images, labels = next(iter(dm.val_dataloader()))
        tf = eval_transform(16, IMAGENET_MEAN, IMAGENET_STD, resize=18)
        expected = [tf(Image.open(p).convert("RGB")) for p, _ in scan_folder(image_tree[1], dm.classes)[1]]
        order = eval_order(3)
        torch.testing.assert_close(images, torch.stack(expected)[order])
        assert labels.tolist() == [[0, 2, 2][i] for i in order]

    def test_test_dir(self, image_tree: tuple[Path, Path], tmp_path: Path) -> None:
        test = write_image_tree(tmp_path / "test", {"dog": ["t.png:RGB"]})
        dm = ImageFolderDataModule(str(image_tree[0]), str(image_tree[1]), str(test), image_size=16)
        assert next(iter(dm.test_dataloader()))[1].tolist() == [1]
        assert len(_dm(image_tree).test_dataloader().dataset) == 3  # type: ignore[arg-type]

    def test_ood_dir_any_layout_no_class_hidden_folders_left_out(
        self, image_tree: tuple[Path, Path], tmp_path: Path
    ) -> None:
        """OOD images flat and in sub-folders whose names are no training class (``zebra``), a grayscale and an RGBA
        one among them; a notebook's hidden checkpoint folder is not read."""
        ood = write_image_tree(tmp_path / "ood", {"zebra": ["z.png:L"], "deep/er": ["y.jpg:RGB"]})
        write_image_tree(ood, {".": ["flat.png:RGBA"]})
        write_image_tree(ood, {".ipynb_checkpoints": ["skip.png:RGB"]})
        dm = ImageFolderDataModule(str(image_tree[0]), ood_dir=str(ood), image_size=16, predict_split="ood")
        loader = dm.ood_dataloader()
        assert loader is not None
        images, labels = next(iter(loader))
        assert images.shape == (3, 3, 16, 16) and labels.tolist() == [-1, -1, -1]
        data = dm.dataset("ood")
        assert data is not None and [Path(p).name for p in data.images] == ["y.jpg", "flat.png", "z.png"]
        torch.testing.assert_close(next(iter(dm.predict_dataloader()))[0], images)  # type: ignore[call-overload]
        assert dm.classes == ["cat", "dog", "eel"]  # the OOD folders are no classes

    def test_a_missing_ood_dir_stops_the_run_before_training(
        self, image_tree: tuple[Path, Path], tmp_path: Path
    ) -> None:
        """Found at setup, not at the first validation (which may come epochs later)."""
        dm = ImageFolderDataModule(str(image_tree[0]), ood_dir=str(tmp_path / "nowhere"), image_size=16, batch_size=2)
        model = _Embed()
        trainer = helpers.cpu_trainer(tmp_path, max_epochs=1)
        with pytest.raises(FileNotFoundError, match=r"Expected a directory of images, but .*nowhere. is not one"):
            trainer.fit(model, datamodule=dm)
        assert trainer.global_step == 0

    def test_ood_dir_without_images_or_missing(self, image_tree: tuple[Path, Path], tmp_path: Path) -> None:
        (tmp_path / "empty" / "sub").mkdir(parents=True)
        with pytest.raises(ValueError, match=r"Expected images .* in .*empty., found none"):
            ImageFolderDataModule(str(image_tree[0]), ood_dir=str(tmp_path / "empty")).ood_dataloader()
        with pytest.raises(FileNotFoundError, match=r"Expected a directory of images, but .*nowhere. is not one"):
            ImageFolderDataModule(str(image_tree[0]), ood_dir=str(tmp_path / "nowhere")).ood_dataloader()
        assert _dm(image_tree).ood_dataloader() is None

    def test_device_path_decodes_fixed_size(self, image_tree: tuple[Path, Path]) -> None:
        dm = _dm(image_tree, batch_size=4, augment_on="device")
        images, _ = next(iter(dm.train_dataloader()))
        assert images.shape == (4, 3, 18, 18) and images.dtype == torch.uint8  # crops are drawn on the device
        clean, _ = next(iter(dm.val_dataloader()))  # type: ignore[call-overload]
        assert clean.shape == (3, 3, 16, 16) and clean.dtype == torch.uint8
        views = dm.device_augment()(images)
        assert views.shape == (4, 2, 3, 16, 16)
        assert "RandomGaussianBlur" in repr(dm.device_augment())

    def test_missing_train_dir(self, tmp_path: Path) -> None:
        dm = ImageFolderDataModule(str(tmp_path / "train"), str(tmp_path / "val"))
        with pytest.raises(FileNotFoundError, match="train' is not one"):
            _ = dm.num_classes


UNICODE_CLASSES = ["zero digit", "één", "二 two"]


class _Embed(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.weight * batch[0].float().mean()

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        images, labels = batch
        return {"features": images.flatten(1)[:, :4].float(), "labels": labels}

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.0)


class TestClassNames:
    """Issue 23 item 4: folder names (unicode too) became bare indices in the legend, the predict files and eval."""

    def _module(self, tmp_path: Path) -> ImageFolderDataModule:
        tree = write_image_tree(
            tmp_path / "train", {name: [f"{i}.png:RGB" for i in range(4)] for name in UNICODE_CLASSES}
        )
        return ImageFolderDataModule(str(tree), image_size=8, val_fraction=0.25, batch_size=3, predict_split="train")

    def test_class_names_saved_with_the_checkpoint(self, tmp_path: Path) -> None:
        dm = self._module(tmp_path)
        assert dm.classes == sorted(UNICODE_CLASSES) and dm.state_dict()["classes"] == sorted(UNICODE_CLASSES)
        trainer = helpers.cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
        trainer.fit(_Embed(), datamodule=dm)
        trainer.save_checkpoint(tmp_path / "run.ckpt")
        saved = torch.load(tmp_path / "run.ckpt", weights_only=True)
        assert saved["ImageFolderDataModule"]["classes"] == sorted(UNICODE_CLASSES)

    def test_class_names_in_the_predict_files_and_the_eval_table(self, tmp_path: Path) -> None:
        dm = self._module(tmp_path)
        writer = EmbeddingWriter(str(tmp_path / "out"))
        trainer = helpers.cpu_trainer(tmp_path, callbacks=[writer])
        trainer.predict(_Embed(), datamodule=dm, return_predictions=False)
        for suffix in (".pt", ".npz"):
            train = load_embeddings(tmp_path / "out" / f"embeddings_train{suffix}")
            assert train.class_names == tuple(sorted(UNICODE_CLASSES))
        report = evaluate_embeddings(train, train, k=3)
        assert report["class_names"] == sorted(UNICODE_CLASSES)
        assert "classes (3): 0: zero digit, 1: één, 2: 二 two" in format_table(report)

    def test_class_names_in_the_plot_legend(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import matplotlib.axes

        shown: list[str] = []
        scatter = matplotlib.axes.Axes.scatter

        def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
            shown.append(kwargs.get("label"))
            return scatter(self, *args, **kwargs)

        monkeypatch.setattr(matplotlib.axes.Axes, "scatter", spy)
        points = np.random.default_rng(0).normal(size=(6, 2))
        plot_embedding(points, np.array([0, 1, 2, 0, 1, -1]), tmp_path / "map.png", "", sorted(UNICODE_CLASSES))
        assert shown == ["unknown", *sorted(UNICODE_CLASSES)]
