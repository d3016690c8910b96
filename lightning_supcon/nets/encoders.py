"""Encoder networks: images ``(B, C, H, W)`` to features ``(B, feature_dim)``, with no classifier on top.

- [0] He et al., Deep Residual Learning for Image Recognition, CVPR 2016, https://arxiv.org/abs/1512.03385
- [1] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362

Every encoder has an integer ``feature_dim`` attribute. ``build_encoder`` builds one by name: a short name of
``ENCODERS`` (the small CNN, and ``resnet18`` ... ``resnet101``: torchvision's ResNets with the CIFAR stem of [1],
that is :class:`~lightning_supcon.nets.Backbone` ``("torchvision/resnetN", cifar_stem=True)``) or a library name,
``"torchvision/<name>"`` or ``"timm/<name>"`` (:class:`~lightning_supcon.nets.Backbone`). A ResNet is built one way:
by torchvision, through :class:`~lightning_supcon.nets.Backbone`.
No lazy modules: their parameters must exist before DDP wraps the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

from torch import Tensor, nn

from lightning_supcon.nets.backbones import FAMILIES, Backbone, closest_names
from lightning_supcon.utils.checks import check_positive_integers

__all__ = [
    "ENCODERS",
    "REBUILDABLE",
    "Backbone",
    "SmallCNN",
    "build_encoder",
    "encoder_feature_dim",
    "encoder_name",
    "encoder_spec",
    "rebuild_encoder",
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
    first two are followed by 2x2 max-pooling, the last by global average pooling. ``init_args`` holds the
    constructor's arguments (encoder files record them to rebuild it).

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
        check_positive_integers(in_channels=in_channels, width=width, feature_dim=feature_dim)
        self.feature_dim = feature_dim
        self.init_args = {"in_channels": in_channels, "width": width, "feature_dim": feature_dim}
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
    **{
        f"resnet{depth}": partial(Backbone, f"torchvision/resnet{depth}", cifar_stem=True)
        for depth in (18, 34, 50, 101)
    },
}
"""Encoder constructors by short name; each accepts ``in_channels`` and its own keyword arguments. ``resnetN`` is
``Backbone("torchvision/resnetN", cifar_stem=True)``: its keyword arguments are :class:`Backbone`'s
(``cifar_stem=False`` for the ImageNet stem, ``options={"zero_init_residual": True}``, ``pretrained``, ``weights``)."""


REBUILDABLE: dict[str, Callable[..., nn.Module]] = {"SmallCNN": SmallCNN, "Backbone": Backbone}
"""The encoder classes an encoder file can be rebuilt into from its recorded ``init_args`` (no other class is ever
built from a file's content)."""


def encoder_spec(encoder: nn.Module) -> dict[str, Any] | None:
    """``{"class": ..., "init_args": {...}}``: how to rebuild ``encoder``, or ``None`` if it cannot be recorded.

    The project's encoders (:data:`REBUILDABLE`) keep the constructor arguments that shape them in ``init_args``;
    they are recorded as JSON (every encoder file format stores JSON metadata), so an option that is not JSON (a
    Python object) leaves the encoder unrecordable, as is any other class.

    Example:
        >>> encoder_spec(SmallCNN(in_channels=1, width=8, feature_dim=16))
        {'class': 'SmallCNN', 'init_args': {'in_channels': 1, 'width': 8, 'feature_dim': 16}}
        >>> encoder_spec(nn.Linear(2, 2)) is None
        True
    """
    name = type(encoder).__name__
    init_args = getattr(encoder, "init_args", None)
    if name not in REBUILDABLE or REBUILDABLE[name] is not type(encoder) or not isinstance(init_args, dict):
        return None
    try:
        return {"class": name, "init_args": json.loads(json.dumps(init_args))}
    except (TypeError, ValueError):
        return None


def rebuild_encoder(spec: dict[str, Any]) -> nn.Module:
    """The encoder :func:`encoder_spec` recorded, freshly initialised (load its weights next).

    Raises:
        ValueError: One line, for a class outside :data:`REBUILDABLE` or arguments it does not take.

    Example:
        >>> rebuild_encoder({"class": "SmallCNN", "init_args": {"in_channels": 1, "width": 8, "feature_dim": 16}})
        ... # doctest: +ELLIPSIS
        SmallCNN(...)
    """
    name, init_args = spec.get("class"), spec.get("init_args")
    if name not in REBUILDABLE or not isinstance(init_args, dict):
        raise ValueError(
            f"Cannot rebuild an encoder of class {name!r} with arguments {init_args!r}: expected one of "
            f"{sorted(REBUILDABLE)} and a dict of its arguments"
        )
    try:
        return REBUILDABLE[str(name)](**init_args)
    except TypeError as err:
        raise ValueError(f"Cannot rebuild encoder {name} from the recorded arguments {init_args!r}: {err}") from None


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
    """Build an encoder by name: a short name of ``ENCODERS`` or a library name.

    Args:
        name: One of ``"small_cnn"``, ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"``, or
            ``"torchvision/<name>"``, ``"timm/<name>"`` (:class:`Backbone`).
        in_channels: Channels of the input images.
        **kwargs: Passed to the constructor, e.g. ``width`` or ``feature_dim`` for the small CNN,
            ``pretrained``/``weights``/``cifar_stem``/``options`` for a ResNet or a library name.

    Returns:
        The encoder and the size of its output features.

    Raises:
        ValueError: One line for an unknown ``name``, naming the valid ones and the closest.

    Example:
        >>> encoder, dim = build_encoder("resnet50", cifar_stem=False)
        >>> dim
        2048
        >>> build_encoder("small_cnn", in_channels=1, feature_dim=64)[1]
        64
        >>> build_encoder("torchvision/mobilenet_v3_small")[1]
        1024
    """
    if name.partition("/")[0] in FAMILIES:
        module: nn.Module = Backbone(name, in_channels=in_channels, **kwargs)  # type: ignore[arg-type]
    elif name in ENCODERS:
        module = ENCODERS[name](in_channels=in_channels, **kwargs)
    else:
        families = " or ".join(f"'{family}/<name>'" for family in FAMILIES)
        raise ValueError(
            f"Expected argument `name` to be one of {sorted(ENCODERS)} or {families}, but got {name!r}"
            f"{closest_names(name, sorted(ENCODERS) + [f'torchvision/{n}' for n in _torchvision_names()])}"
        )
    return module, encoder_feature_dim(module)


def _torchvision_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models())


def encoder_name(encoder: nn.Module | str) -> str:
    """The name a checkpoint records for an encoder: the name it was built by, else its class name.

    Example:
        >>> encoder_name("resnet50"), encoder_name(SmallCNN()), encoder_name(Backbone("torchvision/resnet18"))
        ('resnet50', 'SmallCNN', 'torchvision/resnet18')
    """
    if isinstance(encoder, str):
        return encoder
    name = getattr(encoder, "encoder_name", None)
    return name if isinstance(name, str) else type(encoder).__name__


def resolve_encoder(encoder: nn.Module | str, in_channels: int, feature_dim: int | None) -> tuple[nn.Module, int]:
    """An encoder module and its feature size, from a name or a module (which then needs a size).

    Raises:
        ValueError: For an unknown name, a module without ``feature_dim`` when none is given, or a module whose
            ``in_channels`` attribute differs from ``in_channels`` (the images' channels).
    """
    if isinstance(encoder, str):
        module, dim = build_encoder(encoder, in_channels=in_channels)
        if feature_dim is not None and feature_dim != dim:
            raise ValueError(f"Encoder {encoder!r} outputs {dim} features, but `feature_dim={feature_dim}` was given.")
        return module, dim
    channels = getattr(encoder, "in_channels", None)
    if isinstance(channels, int) and channels != in_channels:
        raise ValueError(
            f"The encoder {encoder_name(encoder)!r} reads {channels}-channel images but the model's in_channels is "
            f"{in_channels} (the data's): set the encoder's `in_channels: {in_channels}` (its init_args)"
        )
    if feature_dim is not None:
        return encoder, feature_dim
    return encoder, encoder_feature_dim(encoder)
