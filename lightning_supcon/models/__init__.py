"""Networks (encoders, projection heads: plain ``nn.Module``s) and the LightningModules that train them."""

from lightning_supcon.models.batchnorm import GlobalBatchNorm
from lightning_supcon.models.checkpoint import export_encoder, save_encoder
from lightning_supcon.models.cross_entropy import CrossEntropyModule
from lightning_supcon.models.encoders import (
    ENCODERS,
    Backbone,
    BasicBlock,
    Bottleneck,
    ResNet,
    SmallCNN,
    build_encoder,
    encoder_feature_dim,
)
from lightning_supcon.models.heads import ProjectionHead
from lightning_supcon.models.linear_probe import LinearProbeModule
from lightning_supcon.models.online_eval import OnlineEvaluation
from lightning_supcon.models.optimization import Schedule
from lightning_supcon.models.queue import MemoryQueue, MomentumEncoder
from lightning_supcon.models.supcon_module import SupConModule

__all__ = [
    "ENCODERS",
    "Backbone",
    "BasicBlock",
    "Bottleneck",
    "CrossEntropyModule",
    "GlobalBatchNorm",
    "LinearProbeModule",
    "MemoryQueue",
    "MomentumEncoder",
    "OnlineEvaluation",
    "ProjectionHead",
    "ResNet",
    "Schedule",
    "SmallCNN",
    "SupConModule",
    "build_encoder",
    "encoder_feature_dim",
    "export_encoder",
    "save_encoder",
]
