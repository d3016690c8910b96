"""DigitsDataModule: the real digits, a fixed stratified split, 1-channel batches, a recipe without flips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier
from torchvision.transforms import RandomResizedCrop, v2

from lightning_supcon.data import AugmentRecipe, DeviceMultiViewAugment, DigitsDataModule
from lightning_supcon.data.digits import load_digit_images
from lightning_supcon.data.warp import RandomResizedCropAffine
from tests.data.recorder import Recorder, cpu_trainer


def _tensors(dm: DigitsDataModule, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = dm.dataset("train") if split == "train" else dm.dataset("val")
    return data.images, torch.as_tensor(data.labels)


class TestImages:
    @pytest.mark.parametrize("size", [8, 16, 32])
    def test_load(self, size: int) -> None:
        images, labels = load_digit_images(size)
        assert images.shape == (1797, 1, size, size) and images.dtype == torch.uint8
        assert images.max() == 255 and images.min() == 0
        assert torch.equal(labels, torch.as_tensor(load_digits().target))

    def test_8px_is_the_raw_data_scaled(self) -> None:
        images, _ = load_digit_images(8)
        expected = (torch.as_tensor(load_digits().images) * 255 / 16).round().to(torch.uint8)
        assert torch.equal(images[:, 0], expected)


class TestSplit:
    def test_sizes_and_stratified(self) -> None:
        dm = DigitsDataModule()
        (_, train_y), (_, val_y) = _tensors(dm, "train"), _tensors(dm, "val")
        assert (len(train_y), len(val_y)) == (1437, 360)
        counts = torch.bincount(val_y, minlength=10)
        assert counts.min() >= 35 and counts.max() <= 37  # 20% of 174..183 per class

    def test_fixed_by_seed(self) -> None:
        a, b, c = (_tensors(DigitsDataModule(split_seed=s), "val")[0] for s in (0, 0, 1))
        assert torch.equal(a, b) and not torch.equal(a, c)

    def test_disjoint_and_complete(self) -> None:
        dm = DigitsDataModule(image_size=8)
        rows = {tuple(x.flatten().tolist()) for split in ("train", "val") for x in _tensors(dm, split)[0]}
        assert len(rows) == len({tuple(x.flatten().tolist()) for x in load_digit_images(8)[0]})

    def test_learnable(self) -> None:
        """Raw-pixel 1-NN on the clean val batches: a real, correctly labelled split scores ~0.98."""
        dm = DigitsDataModule(batch_size=64)
        x_train, y_train = (torch.cat(t) for t in zip(*dm.train_eval_dataloader(), strict=True))
        x_val, y_val = (torch.cat(t) for t in zip(*dm.val_dataloader(), strict=True))  # type: ignore[call-overload]
        knn = KNeighborsClassifier(n_neighbors=1).fit(x_train.flatten(1).numpy(), y_train.numpy())
        assert knn.score(x_val.flatten(1).numpy(), y_val.numpy()) > 0.95

    def test_normalisation_from_training_split(self) -> None:
        dm = DigitsDataModule()
        pixels = _tensors(dm, "train")[0].float() / 255
        assert dm.mean[0] == pytest.approx(pixels.mean().item(), abs=1e-4)
        assert dm.std[0] == pytest.approx(pixels.std().item(), abs=1e-4)
        x_val = torch.cat([b[0] for b in dm.train_eval_dataloader()])
        assert abs(x_val.mean().item()) < 1e-3 and x_val.std().item() == pytest.approx(1.0, abs=1e-3)


class TestBatches:
    @pytest.mark.parametrize("n_views", [1, 2, 4])
    @pytest.mark.parametrize("image_size", [16, 32])
    def test_train(self, n_views: int, image_size: int) -> None:
        dm = DigitsDataModule(batch_size=32, n_views=n_views, image_size=image_size)
        views, labels = next(iter(dm.train_dataloader()))
        assert views.shape == (32, n_views, 1, image_size, image_size) and labels.shape == (32,)
        assert (dm.num_classes, dm.in_channels) == (10, 1)

    def test_no_flip_anywhere(self) -> None:
        dm = DigitsDataModule()
        assert not any(isinstance(step, v2.RandomHorizontalFlip) for step in dm.train_transform().transforms)  # type: ignore[attr-defined]
        augment = dm.device_augment()
        assert isinstance(augment, DeviceMultiViewAugment)
        assert "HorizontalFlip" not in repr(augment) and "RandomAffine" in repr(augment)

    @pytest.mark.parametrize("augment_on", ["cpu", "device"])
    def test_fit(self, tmp_path: Path, augment_on: str) -> None:
        model = Recorder()
        dm = DigitsDataModule(batch_size=64, augment_on=augment_on)
        cpu_trainer(tmp_path, limit_train_batches=2, limit_val_batches=1).fit(model, datamodule=dm)
        assert [tuple(v.shape) for v, _ in model.train_batches] == [(64, 2, 1, 16, 16)] * 2
        assert tuple(model.val_batches[0][0][0].shape) == (64, 1, 16, 16)


class TestRandomResizedCropAffine:
    @pytest.mark.parametrize(("scale", "ratio"), [((0.5, 1.0), (0.8, 1.25)), ((0.08, 1.0), (3 / 4, 4 / 3))])
    def test_crop_box_draws_like_torchvision(self, scale: tuple[float, float], ratio: tuple[float, float]) -> None:
        warp = RandomResizedCropAffine(16, scale, ratio)
        image = torch.zeros(1, 24, 20, dtype=torch.uint8)
        ours = torch.tensor([warp.crop_box(24, 20, torch.rand(25).tolist()) for _ in range(3000)], dtype=torch.float)
        ref = []
        for _ in range(3000):
            top, left, h, w = RandomResizedCrop.get_params(image, list(scale), list(ratio))
            ref.append((left, top, left + w, top + h))
        theirs = torch.tensor(ref, dtype=torch.float)
        for boxes in (ours, theirs):
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 20).all() and (boxes[:, 3] <= 24).all()
        width, height = (
            (ours[:, 2] - ours[:, 0], theirs[:, 2] - theirs[:, 0]),
            (ours[:, 3] - ours[:, 1], theirs[:, 3] - theirs[:, 1]),
        )
        area = [w * h / 480 for w, h in zip(width, height, strict=True)]
        torch.testing.assert_close(area[0].mean(), area[1].mean(), atol=0.02, rtol=0)
        torch.testing.assert_close(
            (width[0] / height[0]).log().std(), (width[1] / height[1]).log().std(), atol=0.02, rtol=0
        )
        torch.testing.assert_close(ours[:, 0].mean(), theirs[:, 0].mean(), atol=0.3, rtol=0)

    def test_crop_box_fallback_as_torchvision(self) -> None:
        warp = RandomResizedCropAffine(16, scale=(0.9, 1.0), ratio=(3.0, 4.0))  # never fits a 10x10 image
        top, left, h, w = RandomResizedCrop.get_params(torch.zeros(1, 10, 10), [0.9, 1.0], [3.0, 4.0])
        assert warp.crop_box(10, 10, torch.rand(25).tolist()) == (left, top, left + w, top + h) == (0, 3, 10, 6)

    def test_identity_and_rgb(self) -> None:
        warp = RandomResizedCropAffine(8, scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0.0, translate=0.0)
        image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
        assert torch.equal(warp(image), image)

    def test_rotation_moves_pixels(self) -> None:
        warp = RandomResizedCropAffine(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=30.0, translate=0.0)
        image = torch.zeros(1, 16, 16, dtype=torch.uint8)
        image[:, 7:9, 2:14] = 255
        assert not torch.equal(warp(image), image)

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match=r"`degrees` >= 0 and `translate` in \[0, 1\], but got 5.0, 2.0"):
            RandomResizedCropAffine(16, degrees=5.0, translate=2.0)
        with pytest.raises(ValueError, match="`scale` to be a pair"):
            RandomResizedCropAffine(16, scale=(0.0, 1.0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 4}, "`image_size` to be >= 8, but got 4"),
        ({"val_fraction": 1.0}, r"`val_fraction` to be in \(0, 1\), but got 1.0"),
        (
            {"augment": AugmentRecipe(colour="autoaugment"), "augment_on": "device"},
            r"`augment.colour` to be one of \('simclr', 'none'\) with `augment_on='device'`",
        ),
        ({"batch_size": 0}, "`batch_size` to be >= 1, but got 0"),
    ],
)
def test_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kwargs)
