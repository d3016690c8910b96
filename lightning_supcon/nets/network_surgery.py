"""Turn a library classifier network into an encoder: drop its classifier, change its input channels, CIFAR stem.

Used by :class:`~lightning_supcon.nets.Backbone` (torchvision and timm networks). Each function edits the network in
place and works on any family that has the parts it names: a final ``nn.Linear`` classifier, a first ``nn.Conv2d``,
a ResNet-style ``conv1``/``maxpool``.

- [0] He et al., Deep Residual Learning for Image Recognition, CVPR 2016, https://arxiv.org/abs/1512.03385
- [1] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_supcon.utils.checks import check_positive_integers

__all__ = ["adapt_first_conv", "first_conv", "remove_classifier", "set_cifar_stem"]


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The module that holds the submodule ``name`` (dotted) and the submodule's last name."""
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def remove_classifier(model: nn.Module) -> tuple[int, list[str]]:
    """Replace the network's classifier, its last ``nn.Linear``, by ``nn.Identity``, and return its input size.

    The last ``nn.Linear`` in registration order is the classifier of every torchvision classification network
    (``fc`` of ResNet/RegNet, ``classifier[-1]`` of ConvNeXt/EfficientNet/MobileNet/VGG, ``heads.head`` of ViT,
    ``head`` of Swin); what comes before it (pooling, flatten, ConvNeXt's LayerNorm) stays, so the network outputs
    the pooled features the classifier read. A ``nn.Dropout`` right before the classifier in the same
    ``nn.Sequential`` goes too: it regularised the classifier, not the features.

    Args:
        model: A classification network; edited in place.

    Returns:
        The feature size (the classifier's ``in_features``) and the state-dict keys of what was removed (e.g.
        ``["fc.weight", "fc.bias"]``), which weight files of the full classifier still hold.

    Raises:
        ValueError: If the network has no ``nn.Linear`` (e.g. SqueezeNet's convolutional classifier).

    Example:
        >>> import torchvision
        >>> net = torchvision.models.get_model("mobilenet_v3_small")
        >>> remove_classifier(net)
        (1024, ['classifier.3.weight', 'classifier.3.bias'])
        >>> net(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 1024])
    """
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"`{type(model).__name__}` has no nn.Linear classifier to remove")
    name = linears[-1]
    linear = model.get_submodule(name)
    assert isinstance(linear, nn.Linear)
    removed = [f"{name}.{key}" for key in linear.state_dict()]
    parent, child = _parent(model, name)
    setattr(parent, child, nn.Identity())
    if isinstance(parent, nn.Sequential) and child.isdigit() and int(child) > 0:
        before = str(int(child) - 1)
        if isinstance(parent.get_submodule(before), nn.Dropout):
            setattr(parent, before, nn.Identity())
    return linear.in_features, removed


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The name and module of the network's first ``nn.Conv2d`` in registration order, the one that reads the image.

    Raises:
        ValueError: If the network has no ``nn.Conv2d``.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError(f"`{type(model).__name__}` has no nn.Conv2d whose input channels could be set")


def adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Make the first conv read ``in_channels`` channels, its weights adapted from the RGB ones.

    Pretrained RGB filters are kept meaningful: for 1 channel the kernel is summed over R, G and B (a grey image
    then gives the response an RGB image of the same grey would); for ``C`` channels the RGB kernels are repeated
    cyclically (R, G, B, R, ...) over the ``C`` channels and scaled by ``3 / C``, which keeps the kernel's overall
    scale; for one channel or a multiple of three a constant image gives exactly the response of the same constant
    RGB image. The same rule is applied to freshly initialised weights. timm applies this rule itself (``in_chans``);
    this function is for torchvision's networks.

    Args:
        model: The network; its first ``nn.Conv2d`` (:func:`first_conv`) is replaced when its input channels
            differ from ``in_channels``.
        in_channels: Channels of the input images.

    Raises:
        ValueError: If ``in_channels`` is not positive, or the first conv is grouped.

    Example:
        >>> import torchvision
        >>> net = torchvision.models.get_model("resnet18")
        >>> rgb = net.conv1.weight.detach().clone()
        >>> adapt_first_conv(net, 1)
        >>> net.conv1.weight.shape, torch.allclose(net.conv1.weight, rgb.sum(1, keepdim=True))
        (torch.Size([64, 1, 7, 7]), True)
    """
    check_positive_integers(in_channels=in_channels)
    name, conv = first_conv(model)
    if conv.in_channels == in_channels:
        return
    if conv.groups != 1:
        raise ValueError(f"The first conv {name!r} of `{type(model).__name__}` is grouped; cannot change its channels")
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    with torch.no_grad():
        weight = conv.weight  # (out, in, kh, kw)
        if in_channels == 1:
            new.weight.copy_(weight.sum(dim=1, keepdim=True))
        else:
            channels = torch.arange(in_channels) % conv.in_channels
            new.weight.copy_(weight[:, channels] * (conv.in_channels / in_channels))
        if conv.bias is not None and new.bias is not None:
            new.bias.copy_(conv.bias)
    parent, child = _parent(model, name)
    setattr(parent, child, new)


def set_cifar_stem(model: nn.Module) -> None:
    """Replace a ResNet's stem (7x7 stride-2 conv, 3x3 max-pool) by the CIFAR stem: one 3x3 stride-1 conv [0, 1].

    32 px images then reach the last stage at 4x4 instead of 1x1 (Sec. 4.2 of [0]; the SupCon reference code [1]).
    The new conv is initialised as torchvision initialises ResNet convs (Kaiming normal, fan-out); pretrained
    weights of the 7x7 conv do not carry over.

    Args:
        model: A ResNet-family network with a plain ``nn.Conv2d`` ``conv1`` and a ``maxpool`` (torchvision's
            ResNet, ResNeXt, Wide ResNet; timm's ``resnet*`` without deep stem); edited in place.

    Raises:
        ValueError: For a network without those parts.

    Example:
        >>> import torchvision
        >>> net = torchvision.models.get_model("resnet18")
        >>> set_cifar_stem(net)
        >>> net.conv1, net.maxpool
        (Conv2d(3, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False), Identity())
    """
    conv = getattr(model, "conv1", None)
    if not isinstance(conv, nn.Conv2d) or not isinstance(getattr(model, "maxpool", None), nn.Module):
        raise ValueError(
            f"`cifar_stem` needs a ResNet-style network with a single conv `conv1` and a `maxpool`; "
            f"`{type(model).__name__}` has none (deep-stem and non-ResNet families have their own stems)"
        )
    new = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=1, padding=1, bias=conv.bias is not None)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    model.conv1 = new
    model.maxpool = nn.Identity()
