"""Networks: encoders and projection heads (plain ``nn.Module``s)."""

from lightning_supcon.models.encoders import (
    ENCODERS,
    BasicBlock,
    Bottleneck,
    ResNet,
    SmallCNN,
    build_encoder,
    encoder_feature_dim,
)
from lightning_supcon.models.heads import ProjectionHead

__all__ = [
    "ENCODERS",
    "BasicBlock",
    "Bottleneck",
    "ProjectionHead",
    "ResNet",
    "SmallCNN",
    "build_encoder",
    "encoder_feature_dim",
]
