"""Encoder export: every format gives the PyTorch encoder's features; load_encoder reads each; other files refused.

Tolerances: the weights-only ``.pt`` and ``.safetensors`` files rebuild the same module (bit-equal features);
TorchScript and ONNX (onnxruntime, CPU) run their own kernels: features within ``atol=rtol=1e-5`` of PyTorch's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from lightning_supcon import OnlineEval
from lightning_supcon.encoder_files.export import FORMATS, export_encoder, export_files, main, output_base
from lightning_supcon.encoder_files.load import OnnxEncoder, build_encoder_from_weights, load_encoder
from lightning_supcon.encoder_files.read import CHECKPOINT_KEY
from lightning_supcon.models import SupConModule
from lightning_supcon.nets import Backbone, SmallCNN, build_encoder

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
ENCODERS: dict[str, tuple[Any, int, int]] = {  # SupConModule's encoder argument, in_channels, image size
    "small_cnn": ("small_cnn", 1, 16),
    "resnet18": ("resnet18", 3, 32),
    "resnet18-imagenet-stem": (Backbone("torchvision/resnet18"), 3, 64),  # metadata names "torchvision/resnet18"
}


def _randomise_batchnorm(module: nn.Module) -> None:
    """Non-trivial running statistics, so features in eval mode differ from train mode."""
    gen = torch.Generator().manual_seed(0)
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean.copy_(0.1 * torch.randn(layer.num_features, generator=gen))
            layer.running_var.copy_(0.5 + torch.rand(layer.num_features, generator=gen))


def _checkpoint(tmp_path: Path, name: str) -> tuple[Path, nn.Module, tuple[int, int, int]]:
    """A SupConModule Lightning checkpoint (as Trainer writes its keys), its encoder and an image shape."""
    encoder, channels, size = ENCODERS[name]
    model = SupConModule(encoder=encoder, in_channels=channels, online=OnlineEval(knn_k=0))
    _randomise_batchnorm(model.encoder)
    checkpoint: dict[str, Any] = {"pytorch-lightning_version": pl.__version__, "state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    path = tmp_path / f"{name}.ckpt"
    torch.save(checkpoint, path)
    return path, model.encoder.eval(), (channels, size, size)


@pytest.fixture(
    scope="module",
    params=["small_cnn", "resnet18", pytest.param("resnet18-imagenet-stem", marks=pytest.mark.slow)],  # ~5 s a ResNet
)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp_path = tmp_path_factory.mktemp(request.param)
    checkpoint, encoder, shape = _checkpoint(tmp_path, request.param)
    paths = export_files(*_load(checkpoint), tmp_path / "out" / "encoder", FORMATS, image_size=shape[-1])
    return {"checkpoint": checkpoint, "encoder": encoder, "shape": shape, "paths": paths}


def _load(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from lightning_supcon.encoder_files.read import load_encoder_checkpoint

    return load_encoder_checkpoint(path)


class TestEveryFormat:
    @pytest.mark.parametrize("file", ["checkpoint", *FORMATS])
    def test_same_features_as_the_pytorch_encoder(self, exported: dict[str, Any], file: str) -> None:
        path = exported["checkpoint"] if file == "checkpoint" else exported["paths"][file]
        loaded = load_encoder(path)
        assert not loaded.training
        channels, height, width = exported["shape"]
        for batch, h, w in ((1, height, width), (5, height, width), (3, height + 8, width + 4)):  # dynamic sizes
            images = torch.randn(batch, channels, h, w, generator=torch.Generator().manual_seed(batch))
            with torch.no_grad():
                expected, features = exported["encoder"](images), loaded(images)
            if file in ("checkpoint", "pt", "safetensors"):
                assert torch.equal(features, expected)
            else:
                torch.testing.assert_close(features, expected, **TOLERANCE)

    def test_files_and_their_metadata(self, exported: dict[str, Any]) -> None:
        from safetensors import safe_open

        paths, meta = exported["paths"], _load(exported["checkpoint"])[0]
        assert [path.name for path in paths.values()] == [
            "encoder.pt",
            "encoder.safetensors",
            "encoder.ts",
            "encoder.onnx",
        ]
        assert torch.load(paths["pt"], weights_only=True)[CHECKPOINT_KEY] == meta
        with safe_open(str(paths["safetensors"]), framework="pt") as f:
            assert json.loads(f.metadata()[CHECKPOINT_KEY]) == meta
        extra = {f"{CHECKPOINT_KEY}.json": ""}
        with pytest.warns(FutureWarning):  # torch.jit is deprecated
            torch.jit.load(str(paths["torchscript"]), _extra_files=extra)
        assert json.loads(extra[f"{CHECKPOINT_KEY}.json"]) == meta
        onnx_encoder = load_encoder(paths["onnx"])
        assert isinstance(onnx_encoder, OnnxEncoder) and onnx_encoder.meta == {**meta, "onnx_image_size": None}
        assert onnx_encoder.feature_dim == meta["feature_dim"]

    def test_onnx_runs_in_plain_onnxruntime_with_a_dynamic_batch(self, exported: dict[str, Any]) -> None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(exported["paths"]["onnx"]), providers=["CPUExecutionProvider"])
        (images_input,) = session.get_inputs()
        assert images_input.name == "images" and images_input.shape[0] == "batch"
        images = torch.randn(7, *exported["shape"])
        (features,) = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(features), exported["encoder"](images), **TOLERANCE)


class TestExportEncoder:
    def test_default_writes_only_the_weights_only_file(self, tmp_path: Path) -> None:
        checkpoint, _, _ = _checkpoint(tmp_path, "small_cnn")
        out = export_encoder(checkpoint, tmp_path / "out" / "weights.bin")
        assert out == tmp_path / "out" / "weights.bin" and sorted(p.name for p in out.parent.iterdir()) == [out.name]

    def test_formats_beside_the_path(self, tmp_path: Path) -> None:
        checkpoint, _, _ = _checkpoint(tmp_path, "small_cnn")
        out = export_encoder(checkpoint, tmp_path / "enc.pt", formats=("pt", "safetensors"))
        assert out == tmp_path / "enc.pt" and (tmp_path / "enc.safetensors").is_file()
        only_onnx = export_encoder(checkpoint, f"{tmp_path}/dir/", formats=["onnx"], image_size=16)
        assert only_onnx == tmp_path / "dir" / "encoder.onnx" and only_onnx.is_file()

    def test_unknown_format(self, tmp_path: Path) -> None:
        checkpoint, _, _ = _checkpoint(tmp_path, "small_cnn")
        with pytest.raises(ValueError, match=r"`formats` among \('pt', 'safetensors', 'torchscript', 'onnx'\)"):
            export_encoder(checkpoint, tmp_path / "enc", formats=("pt", "tflite"))

    def test_output_base(self, tmp_path: Path) -> None:
        assert output_base(tmp_path) == tmp_path / "encoder"
        assert output_base(tmp_path / "a.onnx") == tmp_path / "a" and output_base(tmp_path / "a.b") == tmp_path / "a.b"


class TestLoadEncoderRefuses:
    def test_a_text_file(self, tmp_path: Path) -> None:
        (tmp_path / "notes.pt").write_text("not an encoder")
        with pytest.raises(
            ValueError,
            match=r"Cannot read encoder file '.*notes.pt': not an encoder file of lightning_supcon: expected",
        ):
            load_encoder(tmp_path / "notes.pt")

    def test_a_zip_of_something_else(self, tmp_path: Path) -> None:
        with zipfile.ZipFile(tmp_path / "data.zip", "w") as archive:
            archive.writestr("readme.txt", "hello")
        with pytest.raises(ValueError, match="not an encoder file"):
            load_encoder(tmp_path / "data.zip")

    def test_a_torch_file_without_metadata(self, tmp_path: Path) -> None:
        torch.save({"w": torch.ones(2)}, tmp_path / "weights.pt")
        with pytest.raises(ValueError, match="is not a SupCon checkpoint: it has no 'lightning_supcon' entry"):
            load_encoder(tmp_path / "weights.pt")

    def test_a_pickle_payload_is_not_unpickled(self, tmp_path: Path) -> None:
        torch.save({"payload": Path("x")}, tmp_path / "payload.pt")  # needs full unpickling
        with pytest.raises(ValueError, match="trust_checkpoint=True"):
            load_encoder(tmp_path / "payload.pt")

    def test_a_safetensors_file_without_metadata(self, tmp_path: Path) -> None:
        from safetensors.torch import save_file

        save_file({"w": torch.ones(2)}, str(tmp_path / "w.safetensors"))
        with pytest.raises(ValueError, match="safetensors file without 'lightning_supcon' metadata"):
            load_encoder(tmp_path / "w.safetensors")

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="does not exist"):
            load_encoder(tmp_path / "absent.pt")

    def test_a_custom_encoder_cannot_be_rebuilt_from_weights(self) -> None:
        with pytest.raises(ValueError, match="Cannot rebuild encoder 'MLP' from its weights"):
            build_encoder_from_weights({"encoder": "MLP"}, {"w": torch.ones(1)})
        with pytest.raises(ValueError, match="do not fit encoder 'small_cnn'"):
            build_encoder_from_weights({"encoder": "small_cnn"}, build_encoder("resnet18")[0].state_dict())

    @pytest.mark.parametrize(("depth", "cifar_stem"), [(50, False), (34, True)])
    def test_resnet_stem_read_from_the_weights(self, depth: int, cifar_stem: bool) -> None:
        weights = build_encoder(f"resnet{depth}", in_channels=1, cifar_stem=cifar_stem)[0].state_dict()
        rebuilt = build_encoder_from_weights({"encoder": f"resnet{depth}", "in_channels": 1}, weights)
        assert isinstance(rebuilt, Backbone) and rebuilt.encoder_name == f"torchvision/resnet{depth}"
        assert rebuilt.net.conv1.kernel_size == ((3, 3) if cifar_stem else (7, 7)) and not rebuilt.training
        assert isinstance(build_encoder_from_weights({"encoder": "small_cnn"}, SmallCNN().state_dict()), SmallCNN)


class TestCommand:
    def test_writes_every_format(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        checkpoint, _, _ = _checkpoint(tmp_path, "small_cnn")
        paths = main([str(checkpoint), str(tmp_path / "exported" / "enc"), "--image-size", "16"])
        assert set(paths) == set(FORMATS) and all(path.is_file() for path in paths.values())
        assert capsys.readouterr().out.splitlines()[0] == f"pt: {tmp_path / 'exported' / 'enc.pt'}"

    def test_errors_are_one_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exit_info:
            main([str(tmp_path / "absent.ckpt"), str(tmp_path / "out")])
        assert exit_info.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "absent.ckpt" in lines[0] and "does not exist" in lines[0]

    @pytest.mark.slow
    def test_python_dash_m(self, tmp_path: Path) -> None:
        checkpoint, _, _ = _checkpoint(tmp_path, "small_cnn")
        command = [sys.executable, "-m", "lightning_supcon.encoder_files.export", str(checkpoint), str(tmp_path / "e")]
        proc = subprocess.run([*command, "--formats", "safetensors"], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "e.safetensors").is_file() and proc.stdout.startswith("safetensors: ")


@pytest.fixture(scope="module")
def trained_on_digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small SupConModule fitted one step through a Trainer on the digits DataModule, exported in every format."""
    from lightning_supcon.data import DigitsDataModule
    from tests.helpers import cpu_trainer

    tmp_path = tmp_path_factory.mktemp("digits")
    data = DigitsDataModule(batch_size=32, image_size=16)
    model = SupConModule(
        encoder=SmallCNN(in_channels=1, width=4, feature_dim=8), in_channels=1, online=OnlineEval(knn_k=0)
    )
    trainer = cpu_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    paths = export_files(*_load(tmp_path / "last.ckpt"), tmp_path / "enc", FORMATS)
    return {"data": data, "encoder": model.encoder.eval(), "paths": paths}


class TestExportedEncoderKeepsItsPreprocessing:
    """Issue 24.1: an exported encoder forgot its mean and std; fed [0, 1] pixels its features were another model's."""

    @pytest.mark.parametrize("fmt", FORMATS)
    def test_the_measured_normalisation_is_in_every_format(self, trained_on_digits: dict[str, Any], fmt: str) -> None:
        data = trained_on_digits["data"]
        encoder = load_encoder(trained_on_digits["paths"][fmt])
        assert encoder.preprocessing == {
            "mean": list(data.mean),
            "std": list(data.std),
            "in_channels": 1,
            "image_size": 16,
            "resize": None,
        }

    @pytest.mark.parametrize("fmt", FORMATS)
    def test_normalize_takes_pixels_in_0_1(self, trained_on_digits: dict[str, Any], fmt: str) -> None:
        data = trained_on_digits["data"]
        pixels = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
        normalised = (pixels - torch.tensor(data.mean).view(1, -1, 1, 1)) / torch.tensor(data.std).view(1, -1, 1, 1)
        with torch.no_grad():
            expected = trained_on_digits["encoder"](normalised)
            features = load_encoder(trained_on_digits["paths"][fmt], normalize=True)(pixels)
        torch.testing.assert_close(features, expected, **TOLERANCE)

    def test_normalize_without_recorded_preprocessing_is_one_line(self, tmp_path: Path) -> None:
        from lightning_supcon.encoder_files import save_encoder

        path = save_encoder(
            SupConModule(encoder="small_cnn", in_channels=1, online=OnlineEval(knn_k=0)), tmp_path / "encoder.pt"
        )
        with pytest.raises(ValueError, match=r"records no preprocessing \(mean, std\).*`normalize=False`$"):
            load_encoder(path, normalize=True)


SOURCES: dict[str, tuple[Any, int, int]] = {  # SupConModule's encoder, in_channels, image size
    "library-options": (Backbone("torchvision/mobilenet_v2", options={"width_mult": 0.5}), 3, 32),
    "timm-vit-img-size": (Backbone("timm/vit_tiny_patch16_224", options={"img_size": 32}), 3, 32),
    "timm-one-channel": (Backbone("timm/resnet18", in_channels=1), 1, 32),
}
SLOW_SOURCES = {
    "short-name": ("resnet18", 3, 32),
    "small-cnn-widths": (SmallCNN(in_channels=2, width=6, feature_dim=10), 2, 16),
}


def _weights_file_source(tmp_path: Path) -> nn.Module:
    source = Backbone("torchvision/resnet18", cifar_stem=True)
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    return Backbone("torchvision/resnet18", cifar_stem=True, weights=str(tmp_path / "weights.pt"))


class TestRebuiltWithItsOptions:
    """Issue 24.2: an encoder was rebuilt from its name alone, its options and channels dropped."""

    @pytest.mark.parametrize(
        "source",
        [*SOURCES, *(pytest.param(name, marks=pytest.mark.slow) for name in [*SLOW_SOURCES, "weights-file"])],
    )
    def test_identical_features_in_every_format(self, tmp_path: Path, source: str) -> None:
        if source == "weights-file":
            encoder, channels, size = _weights_file_source(tmp_path), 3, 32
        else:
            encoder, channels, size = {**SOURCES, **SLOW_SOURCES}[source]
        model = SupConModule(encoder=encoder, in_channels=channels, online=OnlineEval(knn_k=0))
        _randomise_batchnorm(model.encoder)
        checkpoint: dict[str, Any] = {"pytorch-lightning_version": pl.__version__, "state_dict": model.state_dict()}
        model.on_save_checkpoint(checkpoint)
        torch.save(checkpoint, tmp_path / "model.ckpt")
        paths = export_files(*_load(tmp_path / "model.ckpt"), tmp_path / "enc", FORMATS, image_size=size)
        images = torch.randn(2, channels, size, size)
        with torch.no_grad():
            expected = model.encoder.eval()(images)
            for fmt, path in {"checkpoint": tmp_path / "model.ckpt", **paths}.items():
                torch.testing.assert_close(load_encoder(path)(images), expected, **TOLERANCE, msg=fmt)

    def test_files_without_encoder_args_still_load(self) -> None:
        encoder = Backbone("torchvision/resnet18", in_channels=1, cifar_stem=True)
        meta = {"encoder": "torchvision/resnet18", "in_channels": 1}
        rebuilt = build_encoder_from_weights(meta, encoder.state_dict())
        assert isinstance(rebuilt, Backbone) and rebuilt.cifar_stem


class TestOnnxSizes:
    """Issue 24.4: a network whose height and width cannot be dynamic in ONNX failed to export with a traceback."""

    def test_adaptive_pooling_to_a_grid_is_exported_at_a_fixed_size(self, tmp_path: Path) -> None:
        import onnxruntime

        from lightning_supcon.encoder_files.onnx_export import write_onnx

        encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d((3, 3)), nn.Flatten()).eval()
        meta = {"encoder": "custom", "in_channels": 3, "feature_dim": 36}
        with pytest.warns(UserWarning, match="takes 20x20 images only: its height and width cannot be dynamic"):
            write_onnx(meta, encoder, tmp_path / "e.onnx", 20)
        session = onnxruntime.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape == ["batch", 3, 20, 20]
        images = torch.randn(5, 3, 20, 20)
        with torch.no_grad():
            torch.testing.assert_close(
                torch.from_numpy(session.run(None, {"images": images.numpy()})[0]), encoder(images), **TOLERANCE
            )
        assert OnnxEncoder(tmp_path / "e.onnx").meta["onnx_image_size"] == 20

    def test_an_export_failure_is_one_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def failing_export(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("the exporter failed\n  a long trace\n  more lines")

        monkeypatch.setattr(torch.onnx, "export", failing_export)
        checkpoint, _, _ = _checkpoint(tmp_path, "small_cnn")
        with pytest.raises(SystemExit):
            main([str(checkpoint), str(tmp_path / "out" / "enc"), "--formats", "onnx"])
        err = capsys.readouterr().err.strip()
        assert "\n" not in err
        assert "Could not export encoder 'small_cnn' to onnx" in err and "the exporter failed" in err

    @pytest.mark.slow
    @pytest.mark.parametrize(("name", "size"), [("alexnet", 64), ("vgg11", 32)])
    def test_alexnet_and_vgg_export_from_the_command(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, size: int
    ) -> None:
        model = SupConModule(encoder=f"torchvision/{name}", in_channels=3, online=OnlineEval(knn_k=0))
        checkpoint: dict[str, Any] = {"pytorch-lightning_version": pl.__version__, "state_dict": model.state_dict()}
        model.on_save_checkpoint(checkpoint)
        torch.save(checkpoint, tmp_path / "m.ckpt")
        main([str(tmp_path / "m.ckpt"), str(tmp_path / "enc"), "--formats", "onnx", "--image-size", str(size)])
        assert f"takes {size}x{size} images only" in capsys.readouterr().err
        images = torch.randn(2, 3, size, size)
        with torch.no_grad():
            expected = model.encoder.eval()(images)
        torch.testing.assert_close(load_encoder(tmp_path / "enc.onnx")(images), expected, atol=1e-4, rtol=1e-3)


def test_every_format_gets_one_file_mode(tmp_path: Path) -> None:
    """Issue 24.4: ``.safetensors`` files were 0600 while the others were 0644."""
    import os

    checkpoint, _, _ = _checkpoint(tmp_path, "small_cnn")
    paths = export_files(*_load(checkpoint), tmp_path / "enc", FORMATS, image_size=16)
    umask = os.umask(0)
    os.umask(umask)
    assert {fmt: path.stat().st_mode & 0o777 for fmt, path in paths.items()} == {fmt: 0o666 & ~umask for fmt in FORMATS}


def test_the_command_runs_as_a_module_without_runpy_s_warning(tmp_path: Path) -> None:
    """``python -m lightning_supcon.encoder_files`` (= ``lightning-supcon-export``); running the ``export`` module
    itself, which the package imports, made runpy warn on every call."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-W", "default", "-m", "lightning_supcon.encoder_files", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and "usage: lightning-supcon-export" in proc.stdout
    assert "RuntimeWarning" not in proc.stderr, proc.stderr
