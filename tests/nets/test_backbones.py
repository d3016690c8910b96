"""Backbone: torchvision and timm networks by name as encoders; pretrained weights and local weights files.

No test downloads: pretrained weights are a randomly initialised network's, saved where the library looks for them.
"""

from __future__ import annotations

import builtins
import re
import warnings
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import Tensor, nn

from lightning_supcon import OnlineEval
from lightning_supcon.cli import cli, main
from lightning_supcon.encoder_files import save_encoder
from lightning_supcon.encoder_files.load import load_encoder
from lightning_supcon.models import LinearProbeModule, SupConModule
from lightning_supcon.nets.backbones import Backbone
from tests.helpers import cli_error, fit_args, one_error_line

LIBRARY_NETWORKS = [  # name, feature size, image size (ViTs: their fixed size)
    ("torchvision/resnet18", 512, 32),
    ("torchvision/convnext_tiny", 768, 32),
    ("torchvision/efficientnet_b0", 1280, 32),
    ("torchvision/mobilenet_v3_small", 1024, 32),
    pytest.param("torchvision/vit_b_32", 768, 224, marks=pytest.mark.slow),  # ~3 s a case; timm's ViT stays
    ("timm/resnet18", 512, 32),
    ("timm/convnext_atto", 320, 32),
    ("timm/mobilenetv3_small_050", 1024, 32),
    ("timm/vit_tiny_patch16_224", 192, 224),
]


def _features(encoder: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        out: Tensor = encoder.eval()(x)
    return out


class TestLibraryNetworks:
    @pytest.mark.parametrize(("name", "dim", "size"), LIBRARY_NETWORKS)
    @pytest.mark.parametrize("in_channels", [1, 3])
    def test_classifier_removed_feature_dim_and_channels(
        self, name: str, dim: int, size: int, in_channels: int
    ) -> None:
        encoder = Backbone(name, in_channels=in_channels)
        assert encoder.feature_dim == dim and encoder.encoder_name == name
        assert _features(encoder, torch.randn(2, in_channels, size, size)).shape == (2, dim)
        assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in encoder.modules())

    @pytest.mark.parametrize("name", ["torchvision/resnet18", "timm/resnet18"])
    def test_every_parameter_gets_a_gradient(self, name: str) -> None:
        encoder = Backbone(name, in_channels=1, cifar_stem=True)
        encoder(torch.randn(2, 1, 16, 16)).sum().backward()
        assert all(p.grad is not None for p in encoder.parameters())  # DDP fails on unused parameters

    @pytest.mark.parametrize("name", ["torchvision/resnet18", "torchvision/resnet50", "timm/resnet18"])
    def test_cifar_stem(self, name: str) -> None:
        for cifar_stem in (True, False):  # False: the control, the ImageNet stem
            net = Backbone(name, cifar_stem=cifar_stem).net
            assert net.conv1.kernel_size == ((3, 3) if cifar_stem else (7, 7))
            assert isinstance(net.maxpool, nn.Identity) == cifar_stem
            stem = nn.Sequential(net.conv1, net.maxpool).eval()
            assert stem(torch.randn(1, 3, 32, 32)).shape[-1] == (32 if cifar_stem else 8)

    def test_cifar_stem_refused_without_a_resnet_stem(self) -> None:
        with pytest.raises(ValueError, match=r"`cifar_stem` needs a ResNet-style network.*`ConvNeXt` has none"):
            Backbone("torchvision/convnext_tiny", cifar_stem=True)

    def test_options_reach_the_library(self) -> None:
        encoder = Backbone("timm/vit_tiny_patch16_224", options={"img_size": 32})
        assert _features(encoder, torch.randn(2, 3, 32, 32)).shape == (2, 192)
        assert (
            Backbone("torchvision/resnet18", options={"zero_init_residual": True}).net.layer1[0].bn2.weight.eq(0).all()
        )

    @pytest.mark.parametrize(
        ("name", "match"),
        [
            ("keras/resnet18", r"'torchvision/<model>' or 'timm/<model>', but got 'keras/resnet18'"),
            ("torchvision/resnet_18", r"Unknown torchvision model 'resnet_18' .*closest: 'resnet18'"),
            ("timm/convnext_att", r"Unknown timm model 'convnext_att' .*closest: 'convnext_atto'"),
        ],
    )
    def test_unknown_names_are_one_line(self, name: str, match: str) -> None:
        with pytest.raises(ValueError, match=match) as err:
            Backbone(name)
        assert "\n" not in str(err.value)

    def test_without_timm_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_import = builtins.__import__

        def no_timm(name: str, *args: Any, **kwargs: Any) -> Any:
            if name == "timm" or name.startswith("timm."):
                raise ImportError("No module named 'timm'")
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_timm)
        with pytest.raises(ImportError, match=r"`timm/resnet18` needs timm: pip install 'lightning-supcon\[timm\]'"):
            Backbone("timm/resnet18")
        Backbone("torchvision/resnet18")  # torchvision names do not need it


class TestPretrained:
    def test_torchvision_reads_its_cache(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TORCH_HOME", str(tmp_path))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        source = torchvision.models.resnet18()
        url = torchvision.models.ResNet18_Weights.DEFAULT.url
        (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
        torch.save(source.state_dict(), tmp_path / "hub" / "checkpoints" / Path(url).name)
        encoder = Backbone("torchvision/resnet18", pretrained=True)
        source.fc = nn.Identity()
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(_features(encoder, x), _features(source, x))

    def test_torchvision_offline_empty_cache_is_one_line(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TORCH_HOME", str(tmp_path))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(ValueError, match=r"torchvision/resnet18 are not in torch's cache .*`weights: PATH`$"):
            Backbone("torchvision/resnet18", pretrained=True)

    def test_timm_offline_empty_cache_is_one_line(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
        monkeypatch.setenv("TORCH_HOME", str(tmp_path))
        with pytest.raises(
            ValueError,
            match=r"pretrained weights of timm/resnet18 are not cached locally and HF_HUB_OFFLINE is set: .*HF_HOME",
        ) as err:
            Backbone("timm/resnet18", pretrained=True)
        assert "\n" not in str(err.value)

    @pytest.fixture
    def empty_caches(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def test_timm_uncached_weights_without_network_fail_at_once(
        self, empty_caches: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """No HF_HUB_OFFLINE, an empty cache and no network (huggingface_hub would retry for about a minute): one
        short probe of the endpoint, then the one-line error at once; timm is never asked to download."""
        import socket
        import time

        probes: list[float] = []

        def unreachable(address: tuple[str, int], timeout: float = 0.0, **kwargs: object) -> socket.socket:
            probes.append(timeout)
            raise TimeoutError("timed out")  # what a connection that never answers gives after `timeout`

        def create_model(*args: object, **kwargs: object) -> None:
            raise AssertionError("timm tried to download")

        monkeypatch.setattr(socket, "create_connection", unreachable)
        monkeypatch.setattr(timm, "create_model", create_model)
        start = time.perf_counter()
        with pytest.raises(
            ValueError,
            match=r"timm/resnet18 are not cached locally and the Hugging Face hub cannot "
            r"be reached: .*hf download timm/resnet18",
        ) as err:
            Backbone("timm/resnet18", pretrained=True)
        assert time.perf_counter() - start < 2 and "\n" not in str(err.value)
        assert len(probes) == 1 and 0 < probes[0] <= 5

    def test_timm_uncached_weights_with_network_are_downloaded_by_timm(
        self, empty_caches: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With the hub reachable, uncached weights are timm's to download (as torchvision's path downloads)."""
        import socket

        class Connection:
            def close(self) -> None:
                pass

        asked: list[bool] = []

        def create_model(name: str, pretrained: bool = False, **kwargs: object) -> None:
            asked.append(pretrained)
            raise OSError("stopped before the download")

        monkeypatch.setattr(socket, "create_connection", lambda *args, **kwargs: Connection())
        monkeypatch.setattr(timm, "create_model", create_model)
        with pytest.raises(ValueError, match=r"timm could not load the pretrained weights of timm/resnet18"):
            Backbone("timm/resnet18", pretrained=True)
        assert asked == [True]

    def test_timm_reads_its_hugging_face_cache(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        source = timm.create_model("resnet18")
        repo = tmp_path / "models--timm--resnet18.a1_in1k"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("0" * 40)
        (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
        save_file(source.state_dict(), str(repo / "snapshots" / ("0" * 40) / "model.safetensors"))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
        encoder = Backbone("timm/resnet18", pretrained=True)
        source.reset_classifier(0)
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(_features(encoder, x), _features(source, x))

    def test_timm_pretrained_from_a_file_of_its_own(self, tmp_path: Path) -> None:
        source = timm.create_model("resnet18")
        torch.save(source.state_dict(), tmp_path / "resnet18.pth")
        overlay = {"pretrained_cfg_overlay": {"file": str(tmp_path / "resnet18.pth")}}
        encoder = Backbone("timm/resnet18", pretrained=True, options=overlay)
        source.reset_classifier(0)
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(_features(encoder, x), _features(source, x))

    def test_pretrained_and_weights_is_refused(self) -> None:
        with pytest.raises(ValueError, match="`pretrained: true` or `weights: PATH` for 'timm/resnet18', not both"):
            Backbone("timm/resnet18", pretrained=True, weights="w.pt")


class TestWeightsFile:
    @pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
    @pytest.mark.parametrize("name", ["torchvision/resnet18", "timm/resnet18"])
    def test_identical_outputs(self, tmp_path: Path, name: str, suffix: str) -> None:
        source = Backbone(name, in_channels=1, cifar_stem=True)
        path = tmp_path / f"w{suffix}"
        weights = source.net.state_dict()  # the library's own keys
        save_file(weights, path) if suffix == ".safetensors" else torch.save(weights, path)
        loaded = Backbone(name, in_channels=1, cifar_stem=True, weights=str(path))
        control = Backbone(name, in_channels=1, cifar_stem=True)
        x = torch.randn(2, 1, 32, 32)
        torch.testing.assert_close(_features(loaded, x), _features(source, x))
        assert not torch.allclose(_features(control, x), _features(source, x))

    def test_full_classifier_file_under_a_wrapper_prefix(self, tmp_path: Path) -> None:
        source = torchvision.models.resnet18()  # with its fc, saved from a DDP-wrapped training
        torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "w.pth")
        loaded = Backbone("torchvision/resnet18", weights=str(tmp_path / "w.pth"))
        source.fc = nn.Identity()
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(_features(loaded, x), _features(source, x))

    def test_a_backbone_state_dict_loads(self, tmp_path: Path) -> None:
        source = Backbone("timm/convnext_atto")
        torch.save(source.state_dict(), tmp_path / "w.pt")  # keys under `net.`
        loaded = Backbone("timm/convnext_atto", weights=str(tmp_path / "w.pt"))
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(_features(loaded, x), _features(source, x))

    def test_mismatched_file_is_one_line_naming_keys(self, tmp_path: Path) -> None:
        torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "resnet34.pt")
        with pytest.raises(ValueError, match=r"do not fit `ResNet`: unexpected \d+ \(e\.g\. layer1\.2\.") as err:
            Backbone("torchvision/resnet18", weights=str(tmp_path / "resnet34.pt"))
        assert "\n" not in str(err.value)
        torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "rgb.pt")
        with pytest.raises(
            ValueError, match=r"mis-shaped \(file vs model\) 1 \(e\.g\. conv1\.weight \(64, 3, 7, 7\) vs"
        ):
            Backbone("torchvision/resnet18", in_channels=1, weights=str(tmp_path / "rgb.pt"))

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="does not exist"):
            Backbone("torchvision/resnet18", weights=str(tmp_path / "absent.pt"))


def _backbone_args(name: str, *options: str) -> list[str]:
    """``--model.init_args.encoder`` set to a :class:`Backbone` by class path, with ``options`` (``key=value``)."""
    prefix = "--model.init_args.encoder.init_args"
    return ["--model.init_args.encoder=lightning_supcon.Backbone", f"{prefix}.name={name}"] + [
        f"{prefix}.{option}" for option in options
    ]


class TestCommandLine:
    def test_fit_with_a_library_name(self, workdir: Path) -> None:
        # the digits data have 1 channel (linked into the model): the name is built for it
        main(
            fit_args(
                "--model.init_args.encoder=timm/resnet18", "--data.init_args.batch_size=8", "--trainer.logger=false"
            )
        )

    def test_weights_file_from_the_config(self, workdir: Path) -> None:
        source = Backbone("torchvision/resnet18", in_channels=1, cifar_stem=True)
        torch.save({"state_dict": source.state_dict()}, workdir / "pretrained.pt")
        options = ["in_channels=1", "cifar_stem=true", f"weights={workdir / 'pretrained.pt'}"]
        model = cli(fit_args(*_backbone_args("torchvision/resnet18", *options))[1:], run=False).model  # no subcommand
        assert isinstance(model.encoder, Backbone) and model.encoder_name == "torchvision/resnet18"
        x = torch.randn(2, 1, 16, 16)
        torch.testing.assert_close(_features(model.encoder, x), _features(source, x))

    @pytest.mark.parametrize(
        ("args", "match"),
        [
            (["--model.init_args.encoder=timm/resnt18"], "Unknown timm model 'resnt18' .*closest: 'resnet18'"),
            (_backbone_args("timm/resnet18"), r"reads 3-channel images but the model's in_channels is 1"),
            (
                _backbone_args("torchvision/resnet18", "in_channels=1", "weights=absent.pt"),
                "'absent.pt' does not exist",
            ),
        ],
    )
    def test_errors_are_one_line(
        self, args: list[str], match: str, capsys: pytest.CaptureFixture[str], workdir: Path
    ) -> None:
        line = one_error_line(cli_error(capsys, fit_args(*args), workdir))
        assert re.search(match, line), line


class TestEncoderFiles:
    @pytest.mark.parametrize(
        ("encoder", "in_channels"),
        [(Backbone("torchvision/resnet18", in_channels=1, cifar_stem=True), 1), ("timm/convnext_atto", 3)],
        ids=["torchvision-cifar-stem", "timm"],
    )
    def test_saved_encoder_loads_back(self, tmp_path: Path, encoder: nn.Module | str, in_channels: int) -> None:
        model = SupConModule(encoder=encoder, in_channels=in_channels, online=OnlineEval(knn_k=0))
        loaded = load_encoder(save_encoder(model, tmp_path / "encoder.pt"))
        assert isinstance(loaded, Backbone) and loaded.encoder_name == model.encoder_name
        x = torch.randn(2, in_channels, 32, 32)
        torch.testing.assert_close(loaded(x), _features(model.encoder, x))

    def test_linear_probe_reads_the_checkpoint(self, tmp_path: Path) -> None:
        model = SupConModule(encoder="timm/resnet18", in_channels=1, online=OnlineEval(knn_k=0))
        path = save_encoder(model, tmp_path / "encoder.pt")
        probe = LinearProbeModule(checkpoint=str(path), encoder="timm/resnet18", in_channels=1)
        x = torch.randn(2, 1, 32, 32)
        torch.testing.assert_close(_features(probe.encoder, x), _features(model.encoder, x))
        with pytest.raises(
            ValueError, match="it has encoder='timm/resnet18', this model encoder='torchvision/resnet18'"
        ):
            LinearProbeModule(checkpoint=str(path), encoder="torchvision/resnet18", in_channels=1)


MODE_SWEEP = [  # name, options, in_channels, image size: (B, C, H, W) -> (B, feature_dim) in train and eval mode
    ("torchvision/googlenet", {}, 3, 32),
    ("torchvision/inception_v3", {}, 1, 75),  # the smallest size it takes
    pytest.param("torchvision/resnet18", {}, 3, 32, marks=pytest.mark.slow),
    pytest.param("torchvision/mobilenet_v3_small", {}, 3, 32, marks=pytest.mark.slow),
    pytest.param("torchvision/efficientnet_b0", {}, 3, 32, marks=pytest.mark.slow),
    pytest.param("torchvision/convnext_tiny", {}, 3, 32, marks=pytest.mark.slow),
    pytest.param("torchvision/vgg11", {}, 3, 32, marks=pytest.mark.slow),
    pytest.param("torchvision/alexnet", {}, 3, 64, marks=pytest.mark.slow),
    pytest.param("torchvision/vit_b_16", {}, 3, 224, marks=pytest.mark.slow),
    pytest.param("torchvision/inception_v3", {}, 3, 299, marks=pytest.mark.slow),
    pytest.param("timm/resnet18", {}, 3, 32, marks=pytest.mark.slow),
    pytest.param("timm/convnext_atto", {}, 3, 32, marks=pytest.mark.slow),
    pytest.param("timm/vit_tiny_patch16_224", {"img_size": 32}, 3, 32, marks=pytest.mark.slow),
]


class TestOutputTypeDoesNotDependOnMode:
    @pytest.mark.parametrize(("name", "options", "channels", "size"), MODE_SWEEP)
    def test_features_in_train_and_eval_mode(
        self, name: str, options: dict[str, Any], channels: int, size: int
    ) -> None:
        encoder = Backbone(name, in_channels=channels, options=options)
        x = torch.randn(2, channels, size, size)
        for mode in (True, False):
            out = encoder.train(mode)(x)
            assert type(out) is Tensor and out.shape == (2, encoder.feature_dim), (mode, type(out))

    @pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
    def test_auxiliary_outputs_asked_for_are_refused(self, name: str) -> None:
        with pytest.raises(ValueError, match=rf"torchvision/{name} with `aux_logits: true` returns auxiliary"):
            Backbone(f"torchvision/{name}", options={"aux_logits": True})

    def test_pretrained_googlenet_reads_one_channel(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Pretrained GoogLeNet weights switch on ``transform_input``, which indexes R, G and B."""
        monkeypatch.setenv("TORCH_HOME", str(tmp_path))
        source = torchvision.models.googlenet(aux_logits=True, init_weights=True)
        url = torchvision.models.GoogLeNet_Weights.DEFAULT.url
        (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
        torch.save(source.state_dict(), tmp_path / "hub" / "checkpoints" / Path(url).name)
        encoder = Backbone("torchvision/googlenet", in_channels=1, pretrained=True)
        assert encoder.train()(torch.randn(2, 1, 32, 32)).shape == (2, 1024)

    @pytest.mark.parametrize("name", ["fcn_resnet50", "fasterrcnn_resnet50_fpn", "r3d_18", "raft_small"])
    def test_networks_without_the_form_are_refused_by_name(self, name: str) -> None:
        with pytest.raises(ValueError, match=rf"torchvision/{name} is not a classification network"):
            Backbone(f"torchvision/{name}")


class TestInitArgs:
    def test_what_shapes_the_network_is_kept(self) -> None:
        encoder = Backbone("timm/resnet18", in_channels=1, options={"drop_rate": 0.1})
        assert encoder.init_args == {
            "name": "timm/resnet18",
            "in_channels": 1,
            "cifar_stem": False,
            "options": {"drop_rate": 0.1},
        }


class TestFixedSizeNetworks:
    """A network that takes one image size says so in one line (was the ViT's assertion deep in a traceback)."""

    def test_another_size_is_one_line_naming_the_option(self) -> None:
        encoder = Backbone("timm/vit_tiny_patch16_224")
        with pytest.raises(ValueError, match=r"takes 224x224 images, but got 32x32: .*`options: \{img_size: 32\}`"):
            encoder(torch.zeros(1, 3, 32, 32))

    def test_built_for_the_size_it_runs_and_scripts(self) -> None:
        encoder = Backbone("timm/vit_tiny_patch16_224", options={"img_size": 32}).eval()
        x = torch.randn(2, 3, 32, 32)
        assert encoder.image_size == (32, 32) and encoder(x).shape == (2, 192)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.testing.assert_close(torch.jit.script(encoder)(x), encoder(x))

    def test_networks_of_any_size_are_not_checked(self) -> None:
        assert Backbone("torchvision/resnet18").image_size is None
        assert Backbone("timm/vit_tiny_patch16_224", options={"dynamic_img_size": True}).image_size is None
