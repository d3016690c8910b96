"""Classifier removal, first-conv channel adaptation and the CIFAR stem, on library networks."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from lightning_supcon.nets.network_surgery import adapt_first_conv, first_conv, remove_classifier, set_cifar_stem


class TestRemoveClassifier:
    @pytest.mark.parametrize(
        ("name", "dim", "removed"),
        [
            ("resnet18", 512, "fc"),
            ("convnext_tiny", 768, "classifier.2"),
            ("efficientnet_b0", 1280, "classifier.1"),
            ("mobilenet_v3_small", 1024, "classifier.3"),
            ("regnet_y_400mf", 440, "fc"),
        ],
    )
    def test_families(self, name: str, dim: int, removed: str) -> None:
        net = torchvision.models.get_model(name).eval()
        before = net.get_submodule(removed)
        assert isinstance(before, nn.Linear) and before.out_features == 1000
        assert remove_classifier(net) == (dim, [f"{removed}.weight", f"{removed}.bias"])
        assert isinstance(net.get_submodule(removed), nn.Identity)
        with torch.no_grad():
            assert net(torch.randn(2, 3, 32, 32)).shape == (2, dim)

    def test_dropout_before_the_classifier_goes_too(self) -> None:
        net = torchvision.models.get_model("efficientnet_b0").train()
        remove_classifier(net)
        assert not any(isinstance(m, nn.Dropout) for m in net.classifier)
        x = torch.randn(2, 3, 32, 32)
        net.eval()
        with torch.no_grad():
            expected = net(x)
        net.train()  # batch norm aside, train mode must not drop features: compare the pooled path in eval BN
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        with torch.no_grad():
            torch.testing.assert_close(net(x), expected)

    def test_no_linear_is_refused(self) -> None:
        with pytest.raises(ValueError, match=r"`SqueezeNet` has no nn\.Linear classifier to remove"):
            remove_classifier(torchvision.models.get_model("squeezenet1_0"))


class TestAdaptFirstConv:
    def test_one_channel_sums_rgb(self) -> None:
        net = torchvision.models.get_model("resnet18")
        rgb = net.conv1.weight.detach().clone()
        adapt_first_conv(net, 1)
        torch.testing.assert_close(net.conv1.weight.detach(), rgb.sum(dim=1, keepdim=True))

    @pytest.mark.parametrize("in_channels", [1, 6])
    def test_constant_image_gives_the_rgb_response(self, in_channels: int) -> None:
        net = torchvision.models.get_model("convnext_tiny")  # a first conv with a bias
        name, conv = first_conv(net)
        rgb_response = conv(torch.full((1, 3, 8, 8), 0.5))
        adapt_first_conv(net, in_channels)
        new = net.get_submodule(name)
        assert isinstance(new, nn.Conv2d) and new.in_channels == in_channels and new.stride == conv.stride
        torch.testing.assert_close(new(torch.full((1, in_channels, 8, 8), 0.5)), rgb_response)

    @pytest.mark.parametrize("in_channels", [2, 4])
    def test_other_channels_repeat_rgb_scaled(self, in_channels: int) -> None:
        net = torchvision.models.get_model("resnet18")
        rgb = net.conv1.weight.detach().clone()
        adapt_first_conv(net, in_channels)
        expected = torch.cat([rgb, rgb], dim=1)[:, :in_channels] * 3 / in_channels
        torch.testing.assert_close(net.conv1.weight.detach(), expected)

    def test_same_channels_leaves_the_conv(self) -> None:
        net = torchvision.models.get_model("resnet18")
        conv = net.conv1
        adapt_first_conv(net, 3)
        assert net.conv1 is conv

    def test_rejects_non_positive(self) -> None:
        with pytest.raises(ValueError, match="`in_channels` to be a positive integer, but got 0"):
            adapt_first_conv(torchvision.models.get_model("resnet18"), 0)


class TestSetCifarStem:
    def test_resnet(self) -> None:
        net = torchvision.models.get_model("resnet50").eval()
        set_cifar_stem(net)
        assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
        assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())

    def test_refuses_other_stems(self) -> None:
        with pytest.raises(ValueError, match="`MobileNetV3` has none"):
            set_cifar_stem(torchvision.models.get_model("mobilenet_v3_small"))
