"""ResNet encoders without the classifier: torchvision's ResNet, with the CIFAR stem and any input channels.

- [0] He et al., Deep Residual Learning for Image Recognition, CVPR 2016, https://arxiv.org/abs/1512.03385
- [1] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [2] Goyal et al., Accurate, Large Minibatch SGD, 2017, https://arxiv.org/abs/1706.02677 (zero-init residual)

The network is torchvision's (``torchvision.models.resnet.ResNet``: ResNet v1.5, the stride on the 3x3 conv of a
bottleneck, 1x1 projection shortcuts), so its state-dict keys are torchvision's (``conv1``, ``bn1``,
``layer1.0.conv1``, ...; no ``fc``) and torchvision's ImageNet weights load into the ImageNet-stem variant. Until
version 0.1 the project had its own definition with the same architecture and parameter count but other key names
(``stem.0``, ``layers.0.0.residual.0``, ...): :func:`rename_legacy_keys` maps them, and the project's loaders apply
it, so encoders saved then still load.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.resnet import ResNet as TorchvisionResNet

from lightning_supcon.models.network_surgery import set_cifar_stem

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "Stem", "has_legacy_keys", "rename_legacy_keys"]

Stem = Literal["cifar", "imagenet"]
_STEMS: tuple[str, ...] = get_args(Stem)
# depth -> (block type, blocks per stage), Table 1 of [0].
_RESNET_LAYOUTS: dict[int, tuple[Literal["basic", "bottleneck"], tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


class ResNet(TorchvisionResNet):
    """ResNet-18/34/50/101 of [0] without the classifier: global-average-pooled features.

    torchvision's network with ``fc`` replaced by ``nn.Identity``, the stem chosen by ``stem``, and the first
    conv made for ``in_channels`` channels (freshly initialised: these encoders are trained from scratch; for
    pretrained weights use :class:`~lightning_supcon.models.Backbone` with ``"torchvision/resnet50"``).

    Args:
        depth: One of 18, 34 (basic blocks, 512 features) or 50, 101 (bottlenecks, 2048 features).
        in_channels: Channels of the input images.
        stem: ``"cifar"``: one 3x3 stride-1 conv and no max-pool, as in the SupCon reference code for 32 px
            images [1]; ``"imagenet"``: 7x7 stride-2 conv then 3x3 stride-2 max-pool, as in [0].
        zero_init_residual: Start the last batch norm's scale of every residual branch at zero, so each block
            begins as the identity [2] (torchvision's ``zero_init_residual``).

    Shape:
        - input: ``(B, in_channels, H, W)``.
        - output: ``(B, feature_dim)``; a 32 px input with the CIFAR stem reaches 4x4 before pooling.

    The forward pass is torchvision's: stem, ``layer1``..``layer4``, average pooling, flatten (``fc`` is the
    identity).

    Raises:
        ValueError: For an unknown ``depth`` or ``stem``, or ``in_channels < 1``.

    Example:
        >>> import torch
        >>> model = ResNet(18)
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 512])
        >>> ResNet(50, in_channels=1, stem="imagenet").feature_dim
        2048
    """

    def __init__(
        self,
        depth: int = 18,
        in_channels: int = 3,
        stem: Stem = "cifar",
        zero_init_residual: bool = False,
    ) -> None:
        if depth not in _RESNET_LAYOUTS:
            raise ValueError(f"Expected argument `depth` to be one of {sorted(_RESNET_LAYOUTS)}, but got {depth}")
        if stem not in _STEMS:
            raise ValueError(f"Expected argument `stem` to be one of {_STEMS}, but got {stem!r}")
        if in_channels < 1:
            raise ValueError(f"Expected argument `in_channels` to be a positive integer, but got {in_channels}")
        kind, blocks_per_stage = _RESNET_LAYOUTS[depth]
        block: type[BasicBlock | Bottleneck] = BasicBlock if kind == "basic" else Bottleneck
        super().__init__(block, list(blocks_per_stage), zero_init_residual=zero_init_residual)
        self.depth, self.in_channels, self.stem = depth, in_channels, stem
        self.feature_dim = 512 * block.expansion
        self.fc = nn.Identity()  # type: ignore[assignment]
        if stem == "cifar":
            set_cifar_stem(self)
        if in_channels != 3:  # the stem's conv for other channels, initialised as torchvision initialises convs
            kernel, stride, padding = (3, 1, 1) if stem == "cifar" else (7, 2, 3)
            self.conv1 = nn.Conv2d(in_channels, 64, kernel, stride=stride, padding=padding, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")


# index in the old `residual` nn.Sequential -> torchvision's block attribute (ReLUs at 2 and 5 hold no weights)
_LEGACY_BLOCK_PARTS = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "conv3", "7": "bn3"}
_LEGACY_KEY = re.compile(
    r"^(?P<pre>.*?)layers\.(?P<stage>\d)\.(?P<block>\d+)\.(?P<part>residual|shortcut)\.(?P<i>\d)\."
)


def rename_legacy_keys(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map the key names of the project's hand-written ResNet (before 0.1) to torchvision's; other keys stay.

    ``stem.0``/``stem.1`` -> ``conv1``/``bn1``; ``layers.<s>.<b>.residual.<i>`` -> ``layer<s+1>.<b>.conv1``/``bn1``/
    ``conv2``/``bn2``/``conv3``/``bn3``; ``layers.<s>.<b>.shortcut.<i>`` -> ``layer<s+1>.<b>.downsample.<i>``. Keys may
    carry a prefix (``encoder.``, ``momentum_encoder.encoder.``): it is kept. A state dict without legacy ResNet
    keys is returned unchanged (other networks have ``stem.0`` keys of their own).

    Example:
        >>> import torch
        >>> keys = ["stem.0.weight", "layers.1.0.residual.4.running_mean", "encoder.layers.3.0.shortcut.1.bias"]
        >>> list(rename_legacy_keys({key: torch.zeros(1) for key in keys}))
        ['conv1.weight', 'layer2.0.bn2.running_mean', 'encoder.layer4.0.downsample.1.bias']
    """
    if not has_legacy_keys(state_dict):
        return state_dict
    renamed: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = re.sub(r"(^|\.)stem\.0\.", r"\1conv1.", key)
        new = re.sub(r"(^|\.)stem\.1\.", r"\1bn1.", new)
        match = _LEGACY_KEY.match(new)
        if match is not None:
            layer = f"{match['pre']}layer{int(match['stage']) + 1}.{match['block']}."
            part = _LEGACY_BLOCK_PARTS[match["i"]] if match["part"] == "residual" else f"downsample.{match['i']}"
            new = f"{layer}{part}.{new[match.end() :]}"
        renamed[new] = value
    return renamed


def has_legacy_keys(state_dict: dict[str, Tensor]) -> bool:
    """Whether ``state_dict`` holds keys of the project's hand-written ResNet (see :func:`rename_legacy_keys`)."""
    return any(_LEGACY_KEY.match(key) for key in state_dict)
