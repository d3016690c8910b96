"""The project's hand-written ResNet (lightning_supcon/models/resnet.py up to commit f0aebaf), kept as a reference.

The package now builds its ResNets from torchvision's (``lightning_supcon.models.resnet``). This copy is kept so that
``benchmarks/backbones.py`` can time the old network against the new one in one run, and so that
``tests/models/test_resnet.py`` can show the two have the same parameter count and output shape per depth. Not part
of the package; nothing imports it but those two.

- [0] He et al., Deep Residual Learning for Image Recognition, CVPR 2016, https://arxiv.org/abs/1512.03385
- [1] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [2] Goyal et al., Accurate, Large Minibatch SGD, 2017, https://arxiv.org/abs/1706.02677 (zero-init residual)
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor, nn

Stem = Literal["cifar", "imagenet"]
_STEMS: tuple[str, ...] = get_args(Stem)
# depth -> (block type, blocks per stage), Table 1 of [0].
_RESNET_LAYOUTS: dict[int, tuple[Literal["basic", "bottleneck"], tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut, Fig. 2 left of [0]; ``expansion = 1``."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to ``(B, in_channels, H, W)``; the output is ``(B, channels, H / s, W / s)``."""
        return torch.relu(self.residual(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, Fig. 5 right of [0] with the stride on the 3x3 conv."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to ``(B, in_channels, H, W)``; the output is ``(B, 4 * channels, H / s, W / s)``."""
        return torch.relu(self.residual(x) + self.shortcut(x))


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class ResNet(nn.Module):
    """ResNet-18/34/50/101 of [0] without the classifier: global-average-pooled features.

    Args:
        depth: One of 18, 34 (basic blocks, 512 features) or 50, 101 (bottlenecks, 2048 features).
        in_channels: Channels of the input images.
        stem: ``"cifar"``: one 3x3 stride-1 conv and no max-pool, as in the SupCon reference code for 32 px
            images [1]; ``"imagenet"``: 7x7 stride-2 conv then 3x3 stride-2 max-pool, as in [0].
        zero_init_residual: Start the last batch norm's scale of every residual branch at zero, so each block
            begins as the identity [2].

    Shape:
        - input: ``(B, in_channels, H, W)``.
        - output: ``(B, feature_dim)``; a 32 px input with the CIFAR stem reaches 4x4 before pooling.

    Raises:
        ValueError: For an unknown ``depth`` or ``stem``.

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
        super().__init__()
        if depth not in _RESNET_LAYOUTS:
            raise ValueError(f"Expected argument `depth` to be one of {sorted(_RESNET_LAYOUTS)}, but got {depth}")
        if stem not in _STEMS:
            raise ValueError(f"Expected argument `stem` to be one of {_STEMS}, but got {stem!r}")
        kind, blocks_per_stage = _RESNET_LAYOUTS[depth]
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock if kind == "basic" else Bottleneck
        self.depth = depth
        self.stem = _make_stem(in_channels, stem)

        stages: list[nn.Module] = []
        in_planes = 64
        for stage, num_blocks in enumerate(blocks_per_stage):
            channels = 64 * 2**stage
            blocks: list[nn.Module] = []
            for i in range(num_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(block(in_planes, channels, stride))
                in_planes = channels * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = in_planes
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, BasicBlock | Bottleneck):
                    last_bn = module.residual[-1]
                    assert isinstance(last_bn, nn.BatchNorm2d)
                    nn.init.zeros_(last_bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Encode ``x`` of shape ``(B, in_channels, H, W)`` into ``(B, feature_dim)``."""
        return self.pool(self.layers(self.stem(x)))


def _make_stem(in_channels: int, stem: Stem) -> nn.Sequential:
    if stem == "cifar":
        return nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )
