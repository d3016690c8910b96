"""Encoder networks: images ``(B, C, H, W)`` to features ``(B, feature_dim)``, with no classifier on top.

- [0] He et al., Deep Residual Learning for Image Recognition, CVPR 2016, https://arxiv.org/abs/1512.03385
- [1] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [2] Goyal et al., Accurate, Large Minibatch SGD, 2017, https://arxiv.org/abs/1706.02677 (zero-init residual)

Every encoder has an integer ``feature_dim`` attribute. ``build_encoder`` builds one by name from ``ENCODERS``.
No lazy modules: their parameters must exist before DDP wraps the model.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import Tensor, nn

from lightning_supcon.models.resnet import BasicBlock, Bottleneck, ResNet, Stem

__all__ = [
    "ENCODERS",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "SmallCNN",
    "Stem",
    "build_encoder",
    "encoder_feature_dim",
    "resolve_encoder",
]


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """A three-block conv net, fast on a CPU, for small images such as 8x8 digits upsampled to 16x16.

    Blocks of 3x3 conv, batch norm and ReLU with ``width``, ``2 * width`` and ``feature_dim`` channels; the
    first two are followed by 2x2 max-pooling, the last by global average pooling.

    Args:
        in_channels: Channels of the input images.
        width: Channels of the first block.
        feature_dim: Channels of the last block, the size of the output features.

    Shape:
        - input: ``(B, in_channels, H, W)``, any ``H, W >= 4``.
        - output: ``(B, feature_dim)``.

    Raises:
        ValueError: If a size is not positive.

    Example:
        >>> import torch
        >>> model = SmallCNN(in_channels=1, width=8, feature_dim=32)
        >>> model(torch.randn(2, 1, 16, 16)).shape
        torch.Size([2, 32])
        >>> model.feature_dim
        32
    """

    def __init__(self, in_channels: int = 1, width: int = 32, feature_dim: int = 128) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("width", width), ("feature_dim", feature_dim)):
            if value < 1:
                raise ValueError(f"Expected argument `{name}` to be a positive integer, but got {value}")
        self.feature_dim = feature_dim
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(2 * width, feature_dim),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Encode ``x`` of shape ``(B, in_channels, H, W)`` into ``(B, feature_dim)``."""
        return self.features(x)


ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN,
    "resnet18": partial(ResNet, 18),
    "resnet34": partial(ResNet, 34),
    "resnet50": partial(ResNet, 50),
    "resnet101": partial(ResNet, 101),
}
"""Encoder constructors by name; each accepts ``in_channels`` and its own keyword arguments."""


def encoder_feature_dim(module: nn.Module) -> int:
    """The size of the features ``module`` outputs, read from its ``feature_dim`` attribute.

    Args:
        module: An encoder.

    Returns:
        ``module.feature_dim``.

    Raises:
        ValueError: If ``module`` has no positive integer ``feature_dim``.

    Example:
        >>> encoder_feature_dim(SmallCNN(feature_dim=64))
        64
    """
    dim = getattr(module, "feature_dim", None)
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ValueError(
            f"Expected `{type(module).__name__}` to have a positive integer attribute `feature_dim`, but got "
            f"{dim!r}; set it on the module or pass the feature size explicitly"
        )
    return dim


def build_encoder(name: str, in_channels: int = 3, **kwargs: object) -> tuple[nn.Module, int]:
    """Build an encoder of ``ENCODERS`` by name.

    Args:
        name: One of ``"small_cnn"``, ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"``.
        in_channels: Channels of the input images.
        **kwargs: Passed to the constructor, e.g. ``stem="imagenet"`` or ``zero_init_residual=True`` for a
            ResNet, ``width`` or ``feature_dim`` for the small CNN.

    Returns:
        The encoder and the size of its output features.

    Raises:
        ValueError: For an unknown ``name``.

    Example:
        >>> encoder, dim = build_encoder("resnet50", stem="imagenet")
        >>> dim
        2048
        >>> build_encoder("small_cnn", in_channels=1, feature_dim=64)[1]
        64
    """
    if name not in ENCODERS:
        raise ValueError(f"Expected argument `name` to be one of {sorted(ENCODERS)}, but got {name!r}")
    module = ENCODERS[name](in_channels=in_channels, **kwargs)
    return module, encoder_feature_dim(module)


def resolve_encoder(encoder: nn.Module | str, in_channels: int, feature_dim: int | None) -> tuple[nn.Module, int]:
    """An encoder module and its feature size, from a built-in name or a module (which then needs a size).

    Raises:
        ValueError: For an unknown name, or a module without ``feature_dim`` when none is given.
    """
    if isinstance(encoder, str):
        module, dim = build_encoder(encoder, in_channels=in_channels)
        if feature_dim is not None and feature_dim != dim:
            raise ValueError(f"Encoder {encoder!r} outputs {dim} features, but `feature_dim={feature_dim}` was given.")
        return module, dim
    if feature_dim is not None:
        return encoder, feature_dim
    return encoder, encoder_feature_dim(encoder)
