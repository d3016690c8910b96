"""Plain networks (``nn.Module``s, no Lightning): encoders by name, library backbones and the surgery they need,
weights files, projection heads, the global BatchNorm, and the memory queue with its momentum encoder."""

from lightning_supcon.nets.backbones import Backbone
from lightning_supcon.nets.batchnorm import GlobalBatchNorm
from lightning_supcon.nets.encoders import ENCODERS, SmallCNN, build_encoder, encoder_feature_dim
from lightning_supcon.nets.heads import ProjectionHead
from lightning_supcon.nets.queue import MemoryQueue, MomentumEncoder, Queue

__all__ = [
    "ENCODERS",
    "Backbone",
    "GlobalBatchNorm",
    "MemoryQueue",
    "MomentumEncoder",
    "ProjectionHead",
    "Queue",
    "SmallCNN",
    "build_encoder",
    "encoder_feature_dim",
]
