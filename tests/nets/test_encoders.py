"""Encoders: output shapes, stems, parameter counts, zero-init residuals and the registry."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from lightning_supcon.nets.encoders import (
    ENCODERS,
    Backbone,
    SmallCNN,
    build_encoder,
    encoder_feature_dim,
    encoder_name,
    resolve_encoder,
)

FEATURE_DIMS = {"small_cnn": 128, "resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def _spatial_size_before_pool(model: ResNet, x: Tensor) -> tuple[int, int]:
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    out = nn.Sequential(stem, model.layer1, model.layer2, model.layer3, model.layer4)(x)
    return out.shape[-2], out.shape[-1]


def _last_bn(block: BasicBlock | Bottleneck) -> nn.BatchNorm2d:
    return block.bn3 if isinstance(block, Bottleneck) else block.bn2


def _shortcut(block: BasicBlock | Bottleneck) -> nn.Module:
    return block.downsample if block.downsample is not None else nn.Identity()


def _blocks(model: nn.Module) -> list[BasicBlock | Bottleneck]:
    return [m for m in model.modules() if isinstance(m, BasicBlock | Bottleneck)]


def _resnet(depth: int, **kwargs: object) -> ResNet:
    """torchvision's network inside the short name ``resnet<depth>`` (a :class:`Backbone` with the CIFAR stem)."""
    encoder, _ = build_encoder(f"resnet{depth}", **kwargs)
    assert isinstance(encoder, Backbone) and isinstance(encoder.net, ResNet)
    return encoder.net


def _in_channels(block: nn.Module) -> int:
    return next(m for m in block.modules() if isinstance(m, nn.Conv2d)).in_channels


class TestSmallCNN:
    @pytest.mark.parametrize("in_channels", [1, 3])
    @pytest.mark.parametrize("size", [8, 16, 32])
    @pytest.mark.parametrize(("width", "feature_dim"), [(32, 128), (8, 20)])
    def test_shape(self, in_channels: int, size: int, width: int, feature_dim: int) -> None:
        model = SmallCNN(in_channels=in_channels, width=width, feature_dim=feature_dim)
        assert model(torch.randn(3, in_channels, size, size)).shape == (3, feature_dim)
        assert model.feature_dim == feature_dim

    def test_every_parameter_gets_a_gradient(self) -> None:
        model = SmallCNN()
        model(torch.randn(4, 1, 16, 16)).sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    def test_small(self) -> None:
        assert _num_params(SmallCNN()) < 200_000

    @pytest.mark.parametrize("arg", ["in_channels", "width", "feature_dim"])
    def test_rejects_non_positive(self, arg: str) -> None:
        with pytest.raises(ValueError, match=f"`{arg}`.*positive integer, but got 0"):
            SmallCNN(**{arg: 0})


class TestResNetNames:
    """``resnet18`` ... ``resnet101``: torchvision's ResNets, the CIFAR stem by default (one way to build a ResNet)."""

    @pytest.mark.parametrize(
        ("depth", "low", "high"),
        [(18, 11.1e6, 11.3e6), (34, 21.2e6, 21.4e6), (50, 23.4e6, 23.6e6), (101, 42.4e6, 42.6e6)],
    )
    def test_param_count(self, depth: int, low: float, high: float) -> None:
        # torchvision's counts minus the 1000-way fc (and, for the CIFAR stem, 7x7 -> 3x3 in the first conv).
        assert low < _num_params(_resnet(depth)) < high

    def test_cifar_stem_is_one_stride_one_3x3_conv_without_max_pool(self) -> None:
        model = _resnet(18)
        assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
        assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
        assert _spatial_size_before_pool(model.eval(), torch.randn(1, 3, 32, 32)) == (4, 4)

    def test_imagenet_stem_is_strided_7x7_conv_and_max_pool(self) -> None:
        model = _resnet(18, cifar_stem=False)
        assert isinstance(model.conv1, nn.Conv2d)
        assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
        assert isinstance(model.maxpool, nn.MaxPool2d)
        assert _spatial_size_before_pool(model.eval(), torch.randn(1, 3, 64, 64)) == (2, 2)

    @pytest.mark.parametrize(("depth", "block"), [(18, BasicBlock), (34, BasicBlock), (50, Bottleneck)])
    def test_block_type_and_stage_widths(self, depth: int, block: type[nn.Module]) -> None:
        model = _resnet(depth)
        blocks = _blocks(model)
        assert all(isinstance(b, block) for b in blocks)
        expected = {18: 8, 34: 16, 50: 16}[depth]
        assert len(blocks) == expected

    @pytest.mark.parametrize("in_channels", [1, 3, 4])
    @pytest.mark.parametrize("cifar_stem", [True, False])
    def test_in_channels(self, in_channels: int, cifar_stem: bool) -> None:
        model = _resnet(18, in_channels=in_channels, cifar_stem=cifar_stem).eval()
        assert model(torch.randn(2, in_channels, 32, 32)).shape == (2, 512)

    @pytest.mark.parametrize("depth", [18, 50])
    def test_zero_init_residual_makes_every_block_start_as_identity_plus_relu(self, depth: int) -> None:
        for zero_init in (True, False):  # False: the control, blocks are not the identity
            for block in _blocks(_resnet(depth, options={"zero_init_residual": zero_init}).eval()):
                last_bn = _last_bn(block)
                assert isinstance(last_bn, nn.BatchNorm2d)
                assert bool((last_bn.weight == 0).all()) == zero_init
                x = torch.randn(2, _in_channels(block), 4, 4)
                with torch.no_grad():
                    assert torch.equal(block(x), torch.relu(_shortcut(block)(x))) == zero_init

    def test_every_parameter_gets_a_gradient(self) -> None:
        # DDP fails on parameters that take no part in the forward pass.
        model = _resnet(18)
        model(torch.randn(2, 3, 16, 16)).sum().backward()
        assert all(p.grad is not None for p in model.parameters())

    def test_the_name_is_the_library_network(self) -> None:
        encoder, _ = build_encoder("resnet50")
        assert isinstance(encoder, Backbone) and encoder.encoder_name == "torchvision/resnet50" and encoder.cifar_stem
        assert all(key.startswith("net.") for key in encoder.state_dict())  # torchvision's keys under net.


class TestBuildEncoder:
    def test_registry_names(self) -> None:
        assert set(ENCODERS) == set(FEATURE_DIMS)

    @pytest.mark.parametrize("name", sorted(FEATURE_DIMS))
    def test_output_shape_at_32px(self, name: str) -> None:
        model, dim = build_encoder(name)
        assert dim == FEATURE_DIMS[name]
        with torch.no_grad():
            assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, dim)

    @pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
    def test_one_input_channel(self, name: str) -> None:
        model, dim = build_encoder(name, in_channels=1)
        with torch.no_grad():
            assert model.eval()(torch.randn(2, 1, 16, 16)).shape == (2, dim)

    def test_kwargs_reach_the_constructor(self) -> None:
        model, dim = build_encoder("resnet50", cifar_stem=False, options={"zero_init_residual": True})
        assert isinstance(model, Backbone) and dim == 2048
        assert isinstance(model.net.maxpool, nn.MaxPool2d)
        assert build_encoder("small_cnn", width=4, feature_dim=16)[1] == 16

    def test_rejects_unknown_name(self) -> None:
        with pytest.raises(
            ValueError,
            match=r"`name` to be one of \['resnet101', .*'small_cnn'\] or 'torchvision/<name>' or 'timm/<name>', "
            r"but got 'vit'$",
        ):
            build_encoder("vit")

    def test_unknown_name_names_the_closest(self) -> None:
        with pytest.raises(ValueError, match=r"but got 'resnt18'; closest: 'resnet18'"):
            build_encoder("resnt18")
        with pytest.raises(ValueError, match=r"Unknown torchvision model 'resnt18' .*; closest: 'resnet18'"):
            build_encoder("torchvision/resnt18")

    @pytest.mark.parametrize(("name", "dim"), [("torchvision/resnet18", 512), ("timm/resnet18", 512)])
    def test_library_names(self, name: str, dim: int) -> None:
        model, feature_dim = build_encoder(name, in_channels=1, cifar_stem=True)
        assert isinstance(model, Backbone) and feature_dim == dim and model.encoder_name == name
        with torch.no_grad():
            assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, dim)


class TestEncoderFeatureDim:
    def test_reads_attribute(self) -> None:
        assert encoder_feature_dim(build_encoder("resnet18")[0]) == 512

    @pytest.mark.parametrize("value", [None, 0, 1.5, True])
    def test_rejects_missing_or_bad_attribute(self, value: object) -> None:
        module = nn.Linear(2, 3)
        if value is not None:
            module.feature_dim = value  # type: ignore[assignment]
        with pytest.raises(ValueError, match="`Linear` to have a positive integer attribute `feature_dim`"):
            encoder_feature_dim(module)


class TestEncoderName:
    def test_name_class_or_library_name(self) -> None:
        assert encoder_name("resnet50") == "resnet50"
        assert encoder_name(SmallCNN()) == "SmallCNN"
        assert encoder_name(Backbone("torchvision/resnet18")) == "torchvision/resnet18"


class TestResolveEncoder:
    def test_name_is_built_with_the_channels(self) -> None:
        module, dim = resolve_encoder("resnet18", in_channels=1, feature_dim=None)
        assert dim == 512 and module.net.conv1.in_channels == 1

    def test_module_with_other_channels_is_refused_in_one_line(self) -> None:
        encoder = Backbone("torchvision/resnet18")  # 3 channels
        with pytest.raises(
            ValueError, match=r"reads 3-channel images but the model's in_channels is 1.*`in_channels: 1`"
        ):
            resolve_encoder(encoder, in_channels=1, feature_dim=None)
        assert resolve_encoder(encoder, in_channels=3, feature_dim=None) == (encoder, 512)

    def test_feature_dim_of_a_name_must_agree(self) -> None:
        with pytest.raises(ValueError, match="outputs 512 features, but `feature_dim=10`"):
            resolve_encoder("resnet18", in_channels=3, feature_dim=10)
