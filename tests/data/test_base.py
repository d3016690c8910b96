"""MultiViewDataModule: batch formats on both paths, clean loaders and their order, the Trainer hook, errors."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from lightning_supcon.data.base import MultiViewDataModule, check_predict_split
from lightning_supcon.data.digits import DigitsDataModule
from lightning_supcon.data.labels import LabelledDataset
from lightning_supcon.data.loading import EVAL_ORDER_SEED, eval_order
from lightning_supcon.data.recipe import AugmentRecipe
from lightning_supcon.data.transforms import eval_transform
from tests.data.recorder import Recorder, cpu_trainer

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _samples(n: int, seed: int, pil: bool) -> list[tuple[Any, int]]:
    """``n`` random 8x8 RGB images; the label is the index, so that order can be checked."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    if pil:
        return [(Image.fromarray(image), i) for i, image in enumerate(images)]
    return [(torch.from_numpy(image).permute(2, 0, 1).contiguous(), i) for i, image in enumerate(images)]


class Tiny(MultiViewDataModule):
    num_classes = 32  # each sample's label is its index (to follow it through the loaders): up to 31
    image_size = 8
    mean = MEAN
    std = STD

    def __init__(self, pil: bool = True, n_train: int = 20, with_test: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pil, self.n_train, self.with_test = pil, n_train, with_test

    def dataset(self, split: str) -> LabelledDataset | None:
        if split == "test" and not self.with_test:
            return None
        size, seed = {"train": (self.n_train, 0), "val": (7, 1), "test": (5, 2), "ood": (4, 3)}[split]
        return _labelled(_samples(size, seed, self.pil))


def _labelled(samples: list[tuple[Any, int]]) -> LabelledDataset:
    return LabelledDataset([image for image, _ in samples], [label for _, label in samples])


def _eval_order(n: int) -> list[int]:
    return np.random.default_rng(EVAL_ORDER_SEED).permutation(n).tolist()


def _clean(samples: list[tuple[Any, int]]) -> Tensor:
    return torch.stack([eval_transform(8, MEAN, STD)(image) for image, _ in samples])


def _all(loader: DataLoader) -> tuple[Tensor, Tensor]:
    batches = list(loader)
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def _fake_trainer(training: bool = True, world_size: int = 1, module: object = None, rank: int = 0) -> Any:
    return SimpleNamespace(training=training, world_size=world_size, lightning_module=module, global_rank=rank)


class TestTrainLoader:
    @pytest.mark.parametrize("n_views", [1, 2, 4])
    @pytest.mark.parametrize("pil", [True, False])
    def test_batches(self, n_views: int, pil: bool) -> None:
        loader = Tiny(pil=pil, batch_size=6, n_views=n_views).train_dataloader()
        batches = list(loader)
        assert len(batches) == 3  # 20 // 6, the incomplete batch dropped
        views, labels = batches[0]
        assert views.shape == (6, n_views, 3, 8, 8) and views.dtype == torch.float32
        assert labels.shape == (6,) and labels.dtype == torch.int64
        if n_views > 1:
            assert not torch.equal(views[:, 0], views[:, 1])

    def test_shuffled(self) -> None:
        labels = torch.cat([b[1] for b in Tiny(batch_size=5).train_dataloader()])
        assert sorted(labels.tolist()) == list(range(20)) and labels.tolist() != list(range(20))

    def test_keep_last(self) -> None:
        sizes = [len(b[1]) for b in Tiny(batch_size=6, drop_last=False).train_dataloader()]
        assert sizes == [6, 6, 6, 2]

    def test_too_small(self) -> None:
        with pytest.raises(ValueError, match=r"at least `batch_size` \(32\).*has 20 for 1 process"):
            Tiny(batch_size=32).train_dataloader()
        assert len(Tiny(batch_size=32, drop_last=False).train_dataloader()) == 1

    def test_too_small_per_process(self) -> None:
        dm = Tiny(batch_size=6)
        dm.trainer = _fake_trainer(world_size=4)
        with pytest.raises(ValueError, match=r"has 20 for 4 process\(es\)"):
            dm.train_dataloader()
        dm = Tiny(batch_size=5)
        dm.trainer = _fake_trainer(world_size=4)
        dm.train_dataloader()

    def test_workers(self) -> None:
        views, labels = next(iter(Tiny(batch_size=4, num_workers=1).train_dataloader()))
        assert views.shape == (4, 2, 3, 8, 8) and labels.shape == (4,)


class TestCleanLoaders:
    @pytest.mark.parametrize("pil", [True, False])
    def test_val_is_eval_transform_in_eval_order(self, pil: bool) -> None:
        dm = Tiny(pil=pil, batch_size=4)
        images, labels = _all(dm.val_dataloader())
        torch.testing.assert_close(images, _clean(_samples(7, 1, pil))[_eval_order(7)])
        assert labels.tolist() == _eval_order(7) != list(range(7))
        again, _ = _all(dm.val_dataloader())
        assert torch.equal(images, again)

    def test_train_eval_is_clean_and_complete(self) -> None:
        images, labels = _all(Tiny(batch_size=6).train_eval_dataloader())
        torch.testing.assert_close(images, _clean(_samples(20, 0, True)))
        assert labels.tolist() == list(range(20))

    def test_eval_batch_size(self) -> None:
        loader = Tiny(batch_size=6, eval_batch_size=3).val_dataloader()
        assert isinstance(loader, DataLoader) and [len(b[1]) for b in loader] == [3, 3, 1]

    def test_test_and_predict(self) -> None:
        with pytest.warns(UserWarning, match="Tiny has no test split: `test` reports the validation split as test/"):
            val, _ = _all(Tiny().test_dataloader())
        torch.testing.assert_close(val, _clean(_samples(7, 1, True))[_eval_order(7)])
        test, _ = _all(Tiny(with_test=True).test_dataloader())
        torch.testing.assert_close(test, _clean(_samples(5, 2, True))[_eval_order(5)])
        test, _ = _all(Tiny(with_test=True).predict_dataloader())  # predict: in data-set order
        torch.testing.assert_close(test, _clean(_samples(5, 2, True)))

    @pytest.mark.parametrize("split", ["ood", "predict"])
    def test_ood_split_clean_in_order_and_of_no_class(self, split: str) -> None:
        """The labels the subclass gave (0, 1, 2, 3) are not training classes: the loader says -1."""
        dm = Tiny(predict_split="ood")
        loader = dm.ood_dataloader() if split == "ood" else dm.predict_dataloader()
        assert loader is not None
        images, labels = _all(loader)
        torch.testing.assert_close(images, _clean(_samples(4, 3, True)))
        assert labels.tolist() == [-1] * 4

    def test_an_ood_split_smaller_than_the_world_leaves_a_rank_without_a_sample(self) -> None:
        """4 OOD images on 5 ranks: rank 4 gets none (Lightning's sampler would raise an AssertionError), each image
        once; the validation loader keeps Lightning's refusal (a rank without a batch could stall DDP's forward)."""
        shards = []
        for rank in range(5):
            dm = Tiny(eval_batch_size=2)
            dm.trainer = _fake_trainer(world_size=5, rank=rank)
            loader = dm.ood_dataloader()
            assert loader is not None and isinstance(loader.sampler, DistributedSampler)
            shards.append(list(loader.sampler))
        assert shards == [[0], [1], [2], [3], []] and sum(len(labels) for _, labels in loader) == 0
        with pytest.raises(AssertionError):
            dm.dataset = lambda split: _labelled(_samples(3, 1, True))  # type: ignore[method-assign]
            dm._datasets.clear()
            dm.val_dataloader()

    def test_no_ood_split(self) -> None:
        dm = DigitsDataModule(image_size=8, predict_split="ood")
        assert dm.ood_dataloader() is None
        with pytest.raises(ValueError, match="needs an out-of-distribution split, but DigitsDataModule has none"):
            dm.predict_dataloader()

    @pytest.mark.parametrize("world_size", [2, 3])
    def test_ddp_ranks_share_the_samples_without_repeats(self, world_size: int) -> None:
        """7 validation and 20 training samples over 2 or 3 ranks: each sample on exactly one rank (the default
        DistributedSampler would repeat 1 or 2 to even out the shards)."""
        seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
        for rank in range(world_size):
            dm = Tiny(batch_size=6, eval_batch_size=2)
            dm.trainer = _fake_trainer(world_size=world_size, rank=rank)
            ood = dm.ood_dataloader()
            assert ood is not None
            for index, loader in enumerate([dm.val_dataloader(), dm.train_eval_dataloader(), ood]):
                assert isinstance(loader.sampler, DistributedSampler)  # so Lightning keeps it
                seen[index] += _all(loader)[0][:, 0, 0, 0].tolist() if index == 2 else _all(loader)[1].tolist()
        assert sorted(seen[0]) == list(range(7)) and sorted(seen[1]) == list(range(20))
        assert sorted(seen[2]) == sorted(_clean(_samples(4, 3, True))[:, 0, 0, 0].tolist())  # 4 OOD images, once


class TestDevicePath:
    def test_loader_yields_uint8(self) -> None:
        images, labels = next(iter(Tiny(batch_size=4, augment_on="device").train_dataloader()))
        assert images.shape == (4, 3, 8, 8) and images.dtype == torch.uint8 and labels.shape == (4,)

    @pytest.mark.parametrize("n_views", [1, 2, 4])
    def test_hook_makes_views_when_training(self, n_views: int) -> None:
        dm = Tiny(batch_size=4, n_views=n_views, augment_on="device")
        dm.trainer = _fake_trainer(training=True)
        batch = next(iter(dm.train_dataloader()))
        views, labels = dm.on_after_batch_transfer(batch, 0)
        assert views.shape == (4, n_views, 3, 8, 8) and views.dtype == torch.float32
        assert torch.equal(labels, batch[1])

    def test_hook_normalises_eval_batches(self) -> None:
        dm = Tiny(batch_size=4, augment_on="device")
        dm.trainer = _fake_trainer(training=False)
        images, _ = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)  # type: ignore[call-overload]
        expected, _ = next(iter(Tiny(batch_size=4).val_dataloader()))  # type: ignore[call-overload]
        torch.testing.assert_close(images, expected)

    def test_crop_flip_policy_leaves_colours_alone(self) -> None:
        """A uniform image stays its colour under crop and flip; jitter or grayscale would change it."""
        colour = torch.tensor([200, 10, 90], dtype=torch.uint8)
        images = colour.view(1, 3, 1, 1).expand(16, 3, 8, 8).contiguous()
        expected = ((colour.float() / 255 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 1, 3, 1, 1)
        torch.manual_seed(0)
        views = Tiny(n_views=2, augment_on="device", augment=AugmentRecipe(colour="none")).device_augment()(images)
        torch.testing.assert_close(views, expected.expand_as(views))
        simclr = Tiny(n_views=2, augment_on="device").device_augment()(images)
        assert not torch.allclose(simclr, expected.expand_as(simclr), atol=1e-3)

    def test_cpu_hook_is_identity(self) -> None:
        batch = (torch.zeros(2, 2, 3, 8, 8), torch.zeros(2))
        assert Tiny().on_after_batch_transfer(batch, 0) is batch


@pytest.mark.parametrize("augment_on", ["cpu", "device"])
def test_fit(tmp_path: Path, augment_on: str) -> None:
    """Through a Trainer: views in training, clean normalised images in validation."""
    model = Recorder()
    dm = Tiny(batch_size=4, n_views=3, augment_on=augment_on)
    cpu_trainer(tmp_path, limit_train_batches=2).fit(model, datamodule=dm)
    assert [views.shape for views, _ in model.train_batches] == [(4, 3, 3, 8, 8)] * 2
    assert all(views.dtype == torch.float32 for views, _ in model.train_batches)
    assert sorted(model.val_batches) == [0]
    val = torch.cat([images for images, _ in model.val_batches[0]])
    torch.testing.assert_close(val, _clean(_samples(7, 1, True))[_eval_order(7)])


class TestArguments:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"batch_size": 0}, "`batch_size` to be >= 1, but got 0"),
            ({"n_views": 0}, "`n_views` to be >= 1, but got 0"),
            ({"eval_batch_size": 0}, "`eval_batch_size` to be >= 1, but got 0"),
            ({"num_workers": -1}, "`num_workers` to be >= 0, but got -1"),
            ({"augment_on": "gpu"}, r"`augment_on` to be one of \('cpu', 'device'\), but got 'gpu'"),
            ({"colour": "mixup"}, "`colour` to be one of .*, but got 'mixup'"),
            (
                {"augment_on": "device", "colour": "randaugment"},
                r"`augment.colour` to be one of \('simclr', 'none'\) with `augment_on='device'`",
            ),
            ({"scale": (0.9, 0.2)}, r"`scale` to be a pair .*but got \(0.9, 0.2\)"),
        ],
    )
    def test_errors(self, kwargs: dict, match: str) -> None:
        recipe_keys = {"colour", "scale"}
        with pytest.raises(ValueError, match=match):
            recipe = {k: v for k, v in kwargs.items() if k in recipe_keys}
            Tiny(**{k: v for k, v in kwargs.items() if k not in recipe_keys}, augment=AugmentRecipe(**recipe))

    def test_defaults_from_the_data_set(self) -> None:
        dm = Tiny()
        assert (dm.batch_size, dm.n_views, dm.eval_batch_size, dm.augment.scale, dm.augment.blur_p > 0) == (
            256,
            2,
            256,
            (0.2, 1.0),
            False,
        )
        assert Tiny(augment=AugmentRecipe(scale=(0.5, 1.0), blur_p=0.5)).augment.scale == (0.5, 1.0)

    def test_subclass_must_provide_data(self) -> None:
        with pytest.raises(NotImplementedError, match="must implement `dataset\\(split\\)`"):
            MultiViewDataModule().train_dataloader()

    @pytest.mark.parametrize("name", ["num_classes", "mean", "std"])
    def test_a_subclass_that_does_not_name_its_data_is_told_what_to_set(self, name: str) -> None:
        """Not an AttributeError: ``hasattr`` (and the CLI's link into the model) would take it for "absent"."""
        with pytest.raises(NotImplementedError, match=f"MultiViewDataModule must set `{name}`"):
            hasattr(MultiViewDataModule(), name)

    def test_num_classes_and_statistics_set_in_init_or_from_the_class_names(self) -> None:
        class Named(MultiViewDataModule):
            classes = ["cat", "dog", "emu"]  # type: ignore[assignment]

            def __init__(self) -> None:
                super().__init__()
                self.mean, self.std = (0.1,), (0.2,)

        dm = Named()
        assert (dm.num_classes, dm.mean, dm.std) == (3, (0.1,), (0.2,))
        dm.num_classes = 2  # multi-label data sets say how many labels
        assert dm.num_classes == 2 and dm.normalize.mean.flatten().tolist() == pytest.approx([0.1])

    @pytest.mark.parametrize(
        ("returned", "error", "match"),
        [
            ("a list", TypeError, r"`Bad.dataset\('train'\)` to return a LabelledDataset.* but got list"),
            ("empty", ValueError, r"`Bad.dataset\('train'\)` is empty: give it samples, or return None"),
            ("label 32", ValueError, r"Bad.dataset\('train'\) has labels up to 32, but num_classes = 32 \(class"),
            ("label -2", ValueError, r"Bad.dataset\('train'\) has labels down to -2, but num_classes = 32"),
            ("KeyError", NotImplementedError, r"Bad.dataset\('train'\) raised KeyError 'train': return None for"),
            ("multi-hot", ValueError, r"shape \(4, 32\), multi-hot rows \(N, L\), but multilabel=False: set `multil"),
        ],
    )
    def test_a_split_the_base_cannot_use_is_named_with_the_fix(self, returned: str, error: type, match: str) -> None:
        images = [torch.zeros(3, 8, 8, dtype=torch.uint8)] * 4

        class Bad(Tiny):
            def dataset(self, split: str) -> Any:
                return {
                    "a list": lambda: [(images[0], 0)],
                    "empty": lambda: LabelledDataset([], []),
                    "label 32": lambda: LabelledDataset(images, [0, 1, 2, 32]),
                    "label -2": lambda: LabelledDataset(images, [0, 1, 2, -2]),
                    "KeyError": lambda: {}[split],
                    "multi-hot": lambda: LabelledDataset(images, np.eye(32, dtype=np.int64)[:4]),
                }[returned]()

        with pytest.raises(error, match=match):
            Bad().train_dataloader()

    @pytest.mark.parametrize(
        ("labels", "match"),
        [
            (np.eye(4, 3, dtype=np.int64) * 3, r"multi-hot labels of shape \(4, 3\) with values in \[0, 3\], but"),
            (np.eye(4, 5, dtype=np.int64), r"multi-hot labels of shape \(4, 5\) .* but num_classes = 3 labels of 0"),
            (np.arange(4), r"shape \(4,\), class indices \(N,\), but multilabel=True: give multi-hot rows"),
        ],
    )
    def test_multi_hot_labels_are_checked_before_any_step(self, labels: np.ndarray, match: str) -> None:
        """Before the sanity check, which would fail in the kNN or in torchmetrics with their own words."""

        class Attributes(Tiny):
            multilabel, num_classes = True, 3

            def dataset(self, split: str) -> LabelledDataset:
                return LabelledDataset([torch.zeros(3, 8, 8, dtype=torch.uint8)] * 4, labels)

        with pytest.raises(ValueError, match=match):
            Attributes().val_dataloader()

    def test_unknown_labels_and_an_empty_optional_split_are_fine(self) -> None:
        class Partial(Tiny):
            def dataset(self, split: str) -> LabelledDataset | None:
                data = super().dataset(split)
                return None if split == "ood" else data.relabel([-1] * len(data)) if data else None

        dm = Partial(n_train=6, batch_size=2)
        assert dm.ood_dataloader() is None and next(iter(dm.train_dataloader()))[1].tolist() == [-1, -1]

    def test_a_missing_required_split_is_named(self) -> None:
        class NoVal(Tiny):
            def dataset(self, split: str) -> LabelledDataset | None:
                return None if split == "val" else super().dataset(split)

        with pytest.raises(ValueError, match=r"`NoVal.dataset\('val'\)` to return the val split"):
            NoVal().val_dataloader()


class DumpingRecorder(Recorder):
    """Saves what each process saw to ``folder/rank<r>.pt`` (ddp_spawn returns nothing else)."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def on_train_end(self) -> None:
        seen = {"shapes": [tuple(v.shape) for v, _ in self.train_batches], "labels": [y for _, y in self.train_batches]}
        torch.save(seen, Path(self.folder) / f"rank{self.global_rank}.pt")


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("augment_on", ["cpu", "device"])
def test_ddp_ranks_get_equal_disjoint_batches(tmp_path: Path, augment_on: str) -> None:
    dm = Tiny(batch_size=3, n_views=2, augment_on=augment_on)  # 20 samples: 10 per rank, 3 full batches each
    trainer = cpu_trainer(tmp_path, devices=2, strategy="ddp_spawn", limit_val_batches=0)
    trainer.fit(DumpingRecorder(str(tmp_path)), datamodule=dm)
    seen = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert seen[0]["shapes"] == seen[1]["shapes"] == [(3, 2, 3, 8, 8)] * 3
    labels = [set(torch.cat(s["labels"]).tolist()) for s in seen]
    assert not labels[0] & labels[1]


class TestPredictSplit:
    @pytest.mark.parametrize("split", ["train", "val", "test"])
    def test_each_split_clean_and_in_order(self, split: str) -> None:
        dm = DigitsDataModule(image_size=8, batch_size=32, eval_batch_size=500, predict_split=split)  # type: ignore[arg-type]
        images, labels = (torch.cat(parts) for parts in zip(*dm.predict_dataloader(), strict=True))
        data = dm.dataset("train") if split == "train" else dm.dataset("val")  # digits: test = val
        assert images.shape == (len(data), 1, 8, 8)  # one clean image per sample, no views
        assert labels.tolist() == [int(data[i][1]) for i in range(len(data))]

    def test_default_is_test(self) -> None:
        assert DigitsDataModule().predict_split == "test"

    def test_rejects_other_names(self) -> None:
        with pytest.raises(
            ValueError, match=r"`predict_split` to be one of \('train', 'val', 'test', 'ood'\), but got 'valid'"
        ):
            check_predict_split("valid")
        with pytest.raises(ValueError, match="predict_split"):
            DigitsDataModule(predict_split="valid")  # type: ignore[arg-type]


class Sorted(MultiViewDataModule):
    """400 samples listed class by class (10 classes of 40), as class folders list them."""

    num_classes, in_channels, image_size, mean, std = 10, 2, 8, (0.0, 0.0), (1.0, 1.0)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def _split(self) -> LabelledDataset:
        labels = np.repeat(np.arange(10), 40)
        index = torch.stack([torch.arange(400) // 256, torch.arange(400) % 256], 1).to(torch.uint8)  # (400, 2)
        return LabelledDataset(index.view(400, 2, 1, 1).expand(400, 2, 8, 8), labels)

    def dataset(self, split: str) -> LabelledDataset:
        return self._split()


class TestEvalOrder:
    """Issue 23 item 9: class folders gave val/loss 3.5076 and a CSV of the same images 2.4920, because each
    evaluation batch of the class-ordered folders held 3-4 classes."""

    @pytest.mark.parametrize("split", ["val", "test"])
    def test_eval_order_mixes_the_classes_of_a_class_ordered_source(self, split: str) -> None:
        dm = Sorted(batch_size=128, eval_batch_size=128)
        loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
        batches = [labels for _, labels in loader]
        assert [len(b) for b in batches] == [128, 128, 128, 16]
        assert all(len(torch.unique(b)) == 10 for b in batches[:3])  # every class in every full batch
        assert sorted(torch.cat(batches).tolist()) == np.repeat(np.arange(10), 40).tolist()  # every sample once

    def test_eval_order_is_one_permutation_for_every_process(self) -> None:
        seen = []
        for rank in range(2):
            dm = Sorted(batch_size=128, eval_batch_size=50)
            dm.trainer = _fake_trainer(world_size=2, rank=rank)
            pixels = torch.cat([images[:, :, 0, 0] for images, _ in dm.val_dataloader()]).mul(255).round().long()
            seen.append(pixels[:, 0] * 256 + pixels[:, 1])  # each sample's index
        assert sorted(torch.cat(seen).tolist()) == list(range(400))  # every sample once over the two ranks
        assert torch.cat([seen[0][:, None], seen[1][: len(seen[0]), None]], 1).view(-1)[:8].tolist() == (
            eval_order(400)[:8].tolist()  # rank r takes every other sample of the one permutation
        )

    def test_eval_order_leaves_predict_in_data_set_order(self) -> None:
        labels = torch.cat([labels for _, labels in Sorted(batch_size=128, predict_split="val").predict_dataloader()])
        assert labels.tolist() == np.repeat(np.arange(10), 40).tolist()


def test_test_split_missing_warns_in_one_line() -> None:
    """Issue 23 item 11: ``test`` without a test split silently reported the validation split as test/*."""
    with pytest.warns(UserWarning, match=r"^Tiny has no test split: `test` reports the validation split as test/\*"):
        Tiny().test_dataloader()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Tiny(with_test=True).test_dataloader()
