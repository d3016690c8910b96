"""lightning_supcon: Supervised Contrastive Learning (Khosla et al., 2020) for PyTorch Lightning."""

from lightning_supcon.callbacks import EmbeddingPlot, EmbeddingWriter
from lightning_supcon.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    CsvDataModule,
    DigitsDataModule,
    HFDataModule,
    ImageFolderDataModule,
    MultiViewDataModule,
)
from lightning_supcon.encoder_files import export_encoder, load_encoder, save_encoder
from lightning_supcon.losses import SupConLoss, supcon_loss
from lightning_supcon.models import CrossEntropyModule, LinearProbeModule, OnlineEval, Schedule, SupConModule
from lightning_supcon.nets import Backbone, ProjectionHead, Queue, SmallCNN, build_encoder

__all__ = [
    "Backbone",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "CrossEntropyModule",
    "CsvDataModule",
    "DigitsDataModule",
    "EmbeddingPlot",
    "EmbeddingWriter",
    "HFDataModule",
    "ImageFolderDataModule",
    "LinearProbeModule",
    "MultiViewDataModule",
    "OnlineEval",
    "ProjectionHead",
    "Queue",
    "Schedule",
    "SmallCNN",
    "SupConLoss",
    "SupConModule",
    "build_encoder",
    "export_encoder",
    "load_encoder",
    "save_encoder",
    "supcon_loss",
]
__version__ = "0.1.0"
