"""AugmentRecipe: its checks, one recipe for both backends, and a recipe field set on the command line or in YAML.

The statistics both backends draw from one recipe are compared in ``tests/data/test_device_augment.py``
(``TestSameStatisticsAsPIL``).
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any, get_args

import pytest
import torch
from torchvision.transforms import v2

from lightning_supcon.cli import cli, main
from lightning_supcon.data import (
    DIGITS_RECIPE,
    IMAGENET_RECIPE,
    SIMCLR,
    AugmentRecipe,
    CIFAR10DataModule,
    DeviceMultiViewAugment,
    DigitsDataModule,
    ImageFolderDataModule,
    supcon_transform,
)
from lightning_supcon.data.recipe import COLOURS, Colour
from lightning_supcon.data.warp import RandomResizedCropAffine
from tests.helpers import DIGITS, fit_args

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class TestAugmentRecipe:
    def test_defaults_are_supcons_cifar_recipe(self) -> None:
        recipe = AugmentRecipe()
        assert recipe == SIMCLR
        assert (recipe.scale, recipe.ratio, recipe.flip, recipe.colour) == ((0.2, 1.0), (3 / 4, 4 / 3), True, "simclr")
        assert (recipe.jitter_factors, recipe.jitter_p, recipe.grayscale_p, recipe.blur_p) == (
            (0.4, 0.4, 0.4, 0.1),
            0.8,
            0.2,
            0.0,
        )

    def test_frozen_and_lists_become_tuples(self) -> None:
        recipe = AugmentRecipe(scale=[0.5, 1], blur_sigma=[0.2, 1])  # type: ignore[arg-type]
        assert recipe.scale == (0.5, 1.0) and recipe.blur_sigma == (0.2, 1.0)
        with pytest.raises(AttributeError):
            recipe.flip = False  # type: ignore[misc]

    def test_choice_list_is_the_literal(self) -> None:
        assert COLOURS == get_args(Colour) == ("simclr", "none", "autoaugment", "randaugment")

    def test_colour_steps_only_for_rgb(self) -> None:
        assert SIMCLR.colour_steps(3) == (True, True) and SIMCLR.colour_steps(1) == (False, False)
        assert AugmentRecipe(colour="none").colour_steps(3) == (False, False)
        assert AugmentRecipe(jitter_p=0.0).colour_steps(3) == (False, True)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"scale": (0.0, 1.0)}, r"`scale` to be a pair \(a, b\) with 0.0 < a <= b <= 1.0, but got \(0.0, 1.0\)"),
            ({"ratio": (2.0, 1.0)}, "`ratio` to be a pair"),
            ({"blur_sigma": (2.0, 0.1)}, "`blur_sigma` to be a pair"),
            ({"jitter_p": -0.1}, r"`jitter_p` to be in \[0, 1\], but got -0.1"),
            ({"grayscale_p": 1.1}, r"`grayscale_p` to be in \[0, 1\]"),
            ({"blur_p": 2.0}, r"`blur_p` to be in \[0, 1\]"),
            ({"colour": "mixup"}, r"`colour` to be one of \('simclr', 'none', 'autoaugment', 'randaugment'\)"),
            ({"jitter": 3.0}, r"`jitter` to be in \[0, 2.5\], but got 3.0"),
            ({"degrees": -1.0}, r"`degrees` >= 0 and `translate` in \[0, 1\], but got -1.0, 0.0"),
            ({"translate": 1.5}, r"`translate` in \[0, 1\], but got 0.0, 1.5"),
        ],
    )
    def test_errors(self, kwargs: dict[str, Any], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            AugmentRecipe(**kwargs)


class TestOneRecipeBothBackends:
    @pytest.mark.parametrize("recipe", [SIMCLR, AugmentRecipe(colour="none", flip=False), IMAGENET_RECIPE])
    def test_steps_and_parameters_agree(self, recipe: AugmentRecipe) -> None:
        cpu = supcon_transform(32, MEAN, STD, recipe).transforms
        device = DeviceMultiViewAugment(32, MEAN, STD, recipe=recipe)
        crop, kcrop = cpu[0], device.geometric[0]
        assert crop.scale == recipe.scale == kcrop._param_generator.scale
        assert crop.ratio == recipe.ratio == kcrop._param_generator.ratio
        assert any(isinstance(s, v2.RandomHorizontalFlip) for s in cpu) == recipe.flip == (len(device.geometric) == 2)
        jitter = [s for s in cpu if isinstance(s, v2.RandomApply) and isinstance(s.transforms[0], v2.ColorJitter)]
        kjitter = [m for m in device.colour if type(m).__name__ == "ColorJitter"]
        assert len(jitter) == len(kjitter) == (recipe.colour == "simclr")
        if jitter:
            assert jitter[0].p == kjitter[0].p == recipe.jitter_p
            assert jitter[0].transforms[0].brightness == (0.6, 1.4) and kjitter[0].brightness == 0.4
        blur = [s for s in cpu if isinstance(s, v2.RandomApply) and isinstance(s.transforms[0], v2.GaussianBlur)]
        kblur = [m for m in device.colour if type(m).__name__ == "RandomGaussianBlur"]
        assert len(blur) == len(kblur) == (recipe.blur_p > 0)
        if blur:
            assert blur[0].p == kblur[0].p == recipe.blur_p

    def test_warp_on_the_cpu_affine_on_the_device(self) -> None:
        warp = supcon_transform(16, (0.5,), (0.5,), DIGITS_RECIPE).transforms[0]
        assert isinstance(warp, RandomResizedCropAffine)
        assert (warp.scale, warp.ratio, warp.degrees, warp.translate) == ((0.5, 1.0), (0.8, 1.25), 10.0, 0.1)
        device = DeviceMultiViewAugment(16, (0.5,), (0.5,), recipe=DIGITS_RECIPE)
        assert [type(m).__name__ for m in device.geometric] == ["RandomResizedCrop", "RandomAffine"]
        assert len(device.colour) == 0

    def test_device_backend_refuses_cpu_only_colour(self) -> None:
        with pytest.raises(ValueError, match=r"`colour` to be one of \('simclr', 'none'\) on the device"):
            DeviceMultiViewAugment(16, MEAN, STD, recipe=AugmentRecipe(colour="autoaugment"))


class TestDataModules:
    def test_each_data_set_states_its_recipe_once(self) -> None:
        assert DigitsDataModule().augment == DIGITS_RECIPE
        assert CIFAR10DataModule().augment == SIMCLR
        assert ImageFolderDataModule("train", "val").augment == IMAGENET_RECIPE

    def test_recipe_reaches_both_backends(self) -> None:
        dm = DigitsDataModule(augment=AugmentRecipe(scale=(0.3, 0.4), flip=True))
        assert dm.train_transform().transforms[0].scale == (0.3, 0.4)  # type: ignore[attr-defined]
        assert dm.device_augment().geometric[0]._param_generator.scale == (0.3, 0.4)


class TestCommandLine:
    def _datamodule(self, tmp_path: Path, *args: str) -> Any:
        app = cli(["--config", DIGITS, f"--trainer.default_root_dir={tmp_path}", *args], run=False)
        return app.datamodule

    def test_a_flag_reaches_the_pipeline_and_keeps_the_rest_of_the_data_sets_recipe(self, tmp_path: Path) -> None:
        default = self._datamodule(tmp_path)
        assert default.augment == DIGITS_RECIPE
        dm = self._datamodule(tmp_path, "--data.init_args.augment.flip", "true")
        assert dm.augment == AugmentRecipe(**{**DIGITS_RECIPE.__dict__, "flip": True})
        assert any(isinstance(step, v2.RandomHorizontalFlip) for step in dm.train_transform().transforms)
        assert "RandomHorizontalFlip" in repr(dm.device_augment().geometric)
        assert "RandomHorizontalFlip" not in repr(default.device_augment().geometric)

    def test_yaml_block(self, tmp_path: Path) -> None:
        config = tmp_path / "augment.yaml"
        config.write_text("data:\n  init_args:\n    augment:\n      scale: [0.3, 0.9]\n      blur_p: 0.25\n")
        dm = self._datamodule(tmp_path, "--config", str(config))
        assert dm.augment.scale == (0.3, 0.9) and dm.augment.blur_p == 0.25 and dm.augment.degrees == 10.0
        views = dm.device_augment()(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))
        assert views.shape == (2, 2, 1, 16, 16)

    def test_bad_value_is_one_error_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exc:
            main(fit_args(f"--trainer.default_root_dir={tmp_path}", "--data.init_args.augment.jitter_p", "1.5"))
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "`jitter_p` to be in [0, 1], but got 1.5" in err


#: A value other than SIMCLR's for every field of AugmentRecipe.
CHANGED: dict[str, Any] = {
    "scale": (0.3, 0.6),
    "ratio": (0.5, 2.0),
    "flip": False,
    "degrees": 20.0,
    "translate": 0.2,
    "colour": "none",
    "jitter": 1.0,
    "jitter_p": 0.5,
    "grayscale_p": 0.4,
    "blur_p": 0.3,
    "blur_sigma": (0.5, 1.5),
}


def _expected(recipe: AugmentRecipe, channels: int) -> dict[str, Any]:
    """What a backend must build from ``recipe``: the steps a field turns on or off, and their parameters."""
    jitter, grayscale = recipe.colour_steps(channels)
    return {
        "crop": (recipe.scale, recipe.ratio),
        "flip": recipe.flip,
        "warp": (recipe.degrees, recipe.translate) if recipe.warps else None,
        "jitter": (recipe.jitter_p, recipe.jitter_factors) if jitter else None,
        "grayscale": recipe.grayscale_p if grayscale else None,
        "blur": (recipe.blur_p, recipe.blur_sigma) if recipe.blur_p > 0 else None,
    }


def _read_cpu(steps: list[Any]) -> dict[str, Any]:
    """The recipe a torchvision pipeline carries out, read back from its steps."""
    crop = steps[0]
    applied = {type(s.transforms[0]).__name__: s for s in steps if isinstance(s, v2.RandomApply)}
    jitter = applied.get("ColorJitter")
    factors = None
    if jitter is not None:
        cj = jitter.transforms[0]
        upper = (cj.brightness[1] - 1, cj.contrast[1] - 1, cj.saturation[1] - 1, cj.hue[1])
        factors = tuple(round(v, 6) for v in upper)
    grayscale = [s.p for s in steps if isinstance(s, v2.RandomGrayscale)]
    blur = applied.get("GaussianBlur")
    return {
        "crop": (crop.scale, crop.ratio),
        "flip": any(isinstance(s, v2.RandomHorizontalFlip) for s in steps),
        "warp": (crop.degrees, crop.translate) if isinstance(crop, RandomResizedCropAffine) else None,
        "jitter": None if jitter is None else (jitter.p, factors),
        "grayscale": grayscale[0] if grayscale else None,
        "blur": None if blur is None else (blur.p, tuple(blur.transforms[0].sigma)),
    }


def _read_device(augment: DeviceMultiViewAugment) -> dict[str, Any]:
    """The recipe a kornia pipeline carries out, read back from its modules."""
    steps = {type(m).__name__: m for m in [*augment.geometric, *augment.colour]}
    crop = steps["RandomResizedCrop"]._param_generator
    affine = steps.get("RandomAffine")
    jitter, grayscale, blur = (steps.get(n) for n in ("ColorJitter", "RandomGrayscale", "RandomGaussianBlur"))
    return {
        "crop": (crop.scale, crop.ratio),
        "flip": "RandomHorizontalFlip" in steps and steps["RandomHorizontalFlip"].p == 0.5,
        "warp": None if affine is None else (affine._param_generator.degrees, affine._param_generator.translate[0]),
        "jitter": None
        if jitter is None
        else (jitter.p, (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)),
        "grayscale": None if grayscale is None else grayscale.p,
        "blur": None if blur is None else (blur.p, blur._param_generator.sigma),
    }


class TestEveryFieldOnBothBackends:
    def test_every_field_is_covered(self) -> None:
        assert set(CHANGED) == {field.name for field in fields(AugmentRecipe)}
        assert all(getattr(SIMCLR, name) != value for name, value in CHANGED.items())

    @pytest.mark.parametrize("channels", [1, 3])
    @pytest.mark.parametrize("field", list(CHANGED))
    def test_field_honoured(self, field: str, channels: int) -> None:
        """Each field changed alone (with a warp and a blur on, so that their own fields show) is carried out by
        both backends; with one channel the colour jitter and grayscale are left out by both, and the views keep
        one channel."""
        base = replace(SIMCLR, degrees=5.0, blur_p=0.5) if field in ("translate", "blur_sigma") else SIMCLR
        recipe = replace(base, **{field: CHANGED[field]})
        mean, std = (0.5,) * channels, (0.25,) * channels
        cpu = supcon_transform(16, mean, std, recipe)
        device = DeviceMultiViewAugment(16, mean, std, n_views=2, recipe=recipe)
        expected = _expected(recipe, channels)
        assert _read_cpu(cpu.transforms) == expected == _read_device(device)
        colour_field = field in ("colour", "jitter", "jitter_p", "grayscale_p")
        assert expected != _expected(base, channels) or (channels == 1 and colour_field)  # the change shows
        if channels == 1:
            assert expected["jitter"] is None and expected["grayscale"] is None
        image = torch.randint(0, 256, (channels, 20, 20), dtype=torch.uint8)
        assert cpu(image).shape == (channels, 16, 16)
        assert device(image.unsqueeze(0)).shape == (1, 2, channels, 16, 16)

    @pytest.mark.parametrize("colour", ["autoaugment", "randaugment"])
    def test_searched_policies_on_the_cpu_for_grayscale_too(self, colour: str) -> None:
        recipe = AugmentRecipe(colour=colour)  # type: ignore[arg-type]
        for channels in (1, 3):
            tf = supcon_transform(16, (0.5,) * channels, (0.25,) * channels, recipe)
            name = {"autoaugment": "AutoAugment", "randaugment": "RandAugment"}[colour]
            assert type(tf.transforms[2]).__name__ == name
            assert tf(torch.randint(0, 256, (channels, 20, 20), dtype=torch.uint8)).shape == (channels, 16, 16)


class TestEveryFieldFromFlagsAndYaml:
    def _datamodule(self, tmp_path: Path, tree: tuple[Path, Path], *args: str) -> Any:
        folders = [f"--data.train_dir={tree[0]}", f"--data.val_dir={tree[1]}"]
        data = ["--data=lightning_supcon.ImageFolderDataModule", *folders, "--data.channels=1"]
        app = cli(["--config", DIGITS, f"--trainer.default_root_dir={tmp_path}", *data, *args], run=False)
        return app.datamodule

    @staticmethod
    def _flag(value: Any) -> str:
        if isinstance(value, tuple):
            return "[" + ",".join(str(v) for v in value) + "]"
        return str(value).lower() if isinstance(value, bool) else str(value)

    def test_flags(self, tmp_path: Path, image_tree: tuple[Path, Path]) -> None:
        flags = [f"--data.init_args.augment.{name}={self._flag(value)}" for name, value in CHANGED.items()]
        dm = self._datamodule(tmp_path, image_tree, *flags)
        assert dm.augment == AugmentRecipe(**CHANGED)
        cpu, device = _read_cpu(dm.train_transform().transforms), _read_device(dm.device_augment())
        assert cpu == _expected(dm.augment, 1) == device

    def test_yaml(self, tmp_path: Path, image_tree: tuple[Path, Path]) -> None:
        lines = [f"      {name}: {self._flag(value)}" for name, value in CHANGED.items()]
        config = tmp_path / "augment.yaml"
        config.write_text("data:\n  init_args:\n    augment:\n" + "\n".join(lines) + "\n")
        dm = self._datamodule(tmp_path, image_tree, "--config", str(config))
        assert dm.augment == AugmentRecipe(**CHANGED)
