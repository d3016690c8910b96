"""ImageDataModule, the base of the no-code sources: channels, mean/std (given, ImageNet's, auto), the held-out
validation split, and the ``channels`` -> ``in_channels`` link of the CLI. Exercised through ImageFolderDataModule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from lightning_supcon.cli import cli
from lightning_supcon.data import ImageFolderDataModule, load_image
from lightning_supcon.data.images import AUTO_SAMPLE
from lightning_supcon.data.normalize import channel_statistics
from lightning_supcon.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from tests.data.formats import write_image_tree
from tests.helpers import DIGITS, spawn_ranks


def _dm(tree: tuple[Path, Path], **kwargs: object) -> ImageFolderDataModule:
    return ImageFolderDataModule(str(tree[0]), str(tree[1]), image_size=16, **kwargs)  # type: ignore[arg-type]


class TestChannels:
    @pytest.mark.parametrize("augment_on", ["cpu", "device"])
    @pytest.mark.parametrize("channels", [1, 3])
    def test_batches_have_the_channels(self, image_tree: tuple[Path, Path], channels: int, augment_on: str) -> None:
        dm = _dm(image_tree, channels=channels, batch_size=4, augment_on=augment_on, mean="auto", std="auto")
        assert dm.in_channels == channels and len(dm.mean) == len(dm.std) == channels
        batch, _ = next(iter(dm.train_dataloader()))
        views = batch if augment_on == "cpu" else dm.device_augment()(batch)
        assert views.shape == (4, 2, channels, 16, 16)
        clean, _ = next(iter(dm.val_dataloader()))  # type: ignore[call-overload]
        assert clean.shape[1] == channels

    def test_grayscale_is_pils_luma(self, image_tree: tuple[Path, Path]) -> None:
        dm = _dm(image_tree, channels=1, resize=16, mean=(0.0,), std=(1.0,))
        image, label = dm.dataset("val")[0]
        assert image.mode == "L" and label == 0
        luma = Image.open(image_tree[1] / "cat" / "v.png").convert("L")  # ITU-R 601-2, PIL's
        expected = F.pil_to_tensor(F.center_crop(F.resize(luma, 16), 16)).float() / 255
        torch.testing.assert_close(dm.eval_transform()(image), expected)

    @pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK"])
    @pytest.mark.parametrize("target", ["L", "RGB"])
    def test_load_image_any_mode(self, mode: str, target: str) -> None:
        image = Image.new("RGB", (3, 2), (200, 10, 90)).convert(mode)
        if mode == "P":
            image.info["transparency"] = 0
        assert load_image(image, target).mode == target


class TestNormalisation:
    def test_defaults(self, image_tree: tuple[Path, Path]) -> None:
        assert (_dm(image_tree).mean, _dm(image_tree).std) == (IMAGENET_MEAN, IMAGENET_STD)
        gray = _dm(image_tree, channels=1)
        assert gray._auto == ["mean", "std"]  # ImageNet has no grayscale statistics: both measured on first use

    def test_given(self, image_tree: tuple[Path, Path]) -> None:
        dm = _dm(image_tree, mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5])
        assert dm.mean == (0.1, 0.2, 0.3) and dm.std == (0.5, 0.5, 0.5)
        torch.testing.assert_close(dm.normalize.mean.flatten(), torch.tensor([0.1, 0.2, 0.3]))

    def test_auto_is_the_seeded_samples_statistics_printed_once(
        self, image_tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        dm = _dm(image_tree, mean="auto", std="auto", split_seed=0)
        decode = dm.decode_transform(train=False)
        train = dm.dataset("train")
        expected = channel_statistics(torch.stack([decode(train[i][0]) for i in range(len(train))]))
        assert (dm.mean, dm.std) == expected and len(train) < AUTO_SAMPLE  # all of a small training set
        assert (dm.mean, dm.std) == expected
        lines = capsys.readouterr().out.splitlines()
        flags = f"--data.init_args.mean [{','.join(f'{v:g}' for v in expected[0])}]"
        assert len(lines) == 1 and f"measured on {len(train)} training images (split_seed 0)" in lines[0]
        assert flags in lines[0]

    def test_auto_samples_with_split_seed_only(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Up to AUTO_SAMPLE images drawn by split_seed alone: the same whatever the global seeds or the rank, so
        every DDP process normalises alike; another split_seed draws another sample."""
        tree = write_image_tree(tmp_path / "t", {"a": [f"{i}.png:RGB" for i in range(6)], "b": ["x.png:L"] * 1})
        monkeypatch.setattr("lightning_supcon.data.images.AUTO_SAMPLE", 3)
        results = []
        for rank, seed, split_seed in ((0, 1, 0), (1, 2, 0), (0, 3, 5)):
            monkeypatch.setenv("RANK", str(rank))
            torch.manual_seed(seed)
            np.random.seed(seed)
            dm = ImageFolderDataModule(str(tree), str(tree), image_size=8, mean="auto", split_seed=split_seed)
            results.append(dm.mean)
            assert dm.std == IMAGENET_STD  # only the one asked for is measured
        assert results[0] == results[1] != results[2]

    def test_set_after_construction_renews_the_normalisation(self, image_tree: tuple[Path, Path]) -> None:
        dm = _dm(image_tree)
        assert dm.normalize.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)
        dm.mean, dm.std = (0.1, 0.2, 0.3), (1.0, 1.0, 1.0)
        assert dm.normalize.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
        assert dm.normalize.std.flatten().tolist() == [1.0, 1.0, 1.0]

    def test_pinned_values_give_the_same_batches(self, image_tree: tuple[Path, Path]) -> None:
        auto = _dm(image_tree, mean="auto", std="auto", batch_size=4)
        pinned = _dm(image_tree, mean=auto.mean, std=auto.std, batch_size=4)
        torch.testing.assert_close(next(iter(auto.val_dataloader())), next(iter(pinned.val_dataloader())))  # type: ignore[call-overload]

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"mean": (0.5,)}, r"`mean` to be 'auto' or 3 value\(s\), one per channel, but got \(0.5,\)"),
            ({"channels": 1, "std": (0.2, 0.2, 0.2)}, r"`std` to be 'auto' or 1 value\(s\)"),
            ({"channels": 2}, r"`channels` to be one of \(1, 3\), but got 2"),
            ({"resize": 0}, "`resize` to be >= 1, but got 0"),
            ({"std": (0.2, 0.0, 0.2)}, r"positive finite number \(it divides\), but channel 1's is 0.0"),
            ({"channels": 1, "std": (-1.0,)}, r"but channel 0's is -1.0"),
            ({"resize": 8}, r"got resize 8 < image_size 16, which pads the crop with zeros: set --data.resize >= 16"),
            ({"val_fraction": 0.0}, r"`val_fraction` to be in \(0, 1\)"),
        ],
    )
    def test_errors(self, image_tree: tuple[Path, Path], kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            _dm(image_tree, **kwargs)


class TestMeasuredStatisticUsedAsDivisor:
    def test_auto_on_a_constant_channel_gives_finite_batches(self, tmp_path: Path) -> None:
        """RGB images whose blue channel is 0 everywhere: main measured std 0.0 and every blue pixel became NaN."""
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            for i in range(3):
                rgb = np.random.default_rng(i).integers(0, 256, (12, 12, 3), dtype=np.uint8)
                rgb[..., 2] = 0
                Image.fromarray(rgb).save(tmp_path / name / f"{i}.png")
        dm = ImageFolderDataModule(str(tmp_path), str(tmp_path), image_size=8, mean="auto", std="auto", batch_size=6)
        with pytest.warns(UserWarning, match="Channel 2's measured std 0 is below one grey level"):
            assert dm.std[2] > 0
        images, _ = next(iter(dm.val_dataloader()))  # type: ignore[call-overload]
        assert torch.isfinite(images).all()


class TestEvaluationCropLargerThanResize:
    def test_refused_at_construction(self, image_tree: tuple[Path, Path]) -> None:
        """--data.image_size 32 --data.resize 16 evaluated on crops that were 75% zero padding, without a word."""
        with pytest.raises(ValueError, match="got resize 16 < image_size 32, which pads the crop with zeros"):
            ImageFolderDataModule(str(image_tree[0]), image_size=32, resize=16)
        assert ImageFolderDataModule(str(image_tree[0]), image_size=32, resize=32).resize == 32  # the whole image


class TestUnreadableImageNamesTheFix:
    @pytest.mark.parametrize("skip_corrupt", [False, True])
    def test_skip_corrupt_named_only_when_off(self, tmp_path: Path, skip_corrupt: bool) -> None:
        """A file whose header reads but whose data is truncated: skip_corrupt (a header check) lets it through, so
        only the source with skip_corrupt off is told to turn it on."""
        tree = write_image_tree(tmp_path / "t", {"a": ["1.jpg:RGB", "2.png:RGB"], "b": ["3.png:RGB"]}, size=(64, 64))
        data = (tree / "a" / "1.jpg").read_bytes()
        (tree / "a" / "1.jpg").write_bytes(data[: len(data) * 7 // 10])  # the header and the first scans
        dm = ImageFolderDataModule(str(tree), str(tree), image_size=8, skip_corrupt=skip_corrupt)
        with pytest.raises(OSError, match=r"Cannot read image file '.*1.jpg'") as error:
            next(iter(dm.val_dataloader()))  # type: ignore[call-overload]
        assert ("--data.skip_corrupt true" in str(error.value)) is not skip_corrupt

    def test_a_float_image_out_of_range_is_not_told_to_skip_corrupt_files(self, tmp_path: Path) -> None:
        """PIL opens it (skip_corrupt keeps it): the fix is in the file, not in skip_corrupt."""
        tree = write_image_tree(tmp_path / "t", {"a": ["2.png:RGB"], "b": ["3.png:RGB"]})
        Image.fromarray(np.array([[0.0, 2.0]], dtype=np.float32)).save(tree / "a" / "1.tif")
        dm = ImageFolderDataModule(str(tree), str(tree), image_size=8)
        with pytest.raises(OSError, match=r"1.tif': its floats span \[0, 2\], but float images must lie in") as error:
            list(dm.val_dataloader())
        assert "skip_corrupt" not in str(error.value)


def _auto_statistics_on_rank(rank: int, port: int, out_dir: str) -> None:
    """A DDP process: its own global seeds, the tree the test wrote, ``mean``/``std`` measured (``auto``)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(100 + rank)
    np.random.seed(100 + rank)
    dm = ImageFolderDataModule(f"{out_dir}/tree", f"{out_dir}/tree", image_size=8, channels=1, split_seed=3)
    torch.save((dm.mean, dm.std), f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow  # ~10 s, 2 processes; `make test-slow`. The rank- and seed-independence is also tested above.
@pytest.mark.distributed
def test_auto_statistics_equal_on_two_ddp_processes(tmp_path: Path) -> None:
    files = [f"{i}.png:RGB" for i in range(5)]
    write_image_tree(tmp_path / "tree", {"a": files, "b": [name.replace("RGB", "L") for name in files]})
    first, second = spawn_ranks(_auto_statistics_on_rank, tmp_path, world=2)
    assert first == second and len(first[0]) == 1


class TestHeldOutValidation:
    def test_seeded_stratified_split_without_val_dir(self, tmp_path: Path) -> None:
        tree = write_image_tree(tmp_path / "t", {c: [f"{i}.png:RGB" for i in range(10)] for c in ("a", "b")})
        dm = ImageFolderDataModule(str(tree), val_fraction=0.2, split_seed=0)
        train, val = dm.dataset("train"), dm.dataset("val")
        assert (len(train), len(val)) == (16, 4) and sorted(val.labels) == [0, 0, 1, 1]
        assert not set(train.indices) & set(val.indices)
        assert dm.dataset("test") is None and len(dm.test_dataloader().dataset) == 4  # type: ignore[arg-type]
        other = ImageFolderDataModule(str(tree), val_fraction=0.2, split_seed=1).dataset("val")
        assert ImageFolderDataModule(str(tree), val_fraction=0.2).dataset("val").indices == val.indices != other.indices


def test_cli_links_channels_to_the_model(image_tree: tuple[Path, Path], tmp_path: Path) -> None:
    app = cli(
        [
            "--config",
            DIGITS,
            f"--trainer.default_root_dir={tmp_path}",
            "--data=lightning_supcon.ImageFolderDataModule",
            f"--data.train_dir={image_tree[0]}",
            "--data.channels=1",
            "--data.mean=[0.5]",
            "--data.std=[0.25]",
        ],
        run=False,
    )
    assert app.datamodule.in_channels == 1 and app.datamodule.num_classes == 3
    assert app.model.hparams.in_channels == 1 and app.model.hparams.num_classes == 3
    assert app.model.encoder(torch.zeros(2, 1, 16, 16)).shape[0] == 2
