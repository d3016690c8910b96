"""lightning_supcon: Supervised Contrastive Learning (Khosla et al., 2020) for PyTorch Lightning."""

from lightning_supcon.callbacks import EmbeddingPlot, EmbeddingWriter, MetricsSummary
from lightning_supcon.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    CsvDataModule,
    DigitsDataModule,
    HFDataModule,
    ImageFolderDataModule,
    MultiViewDataModule,
)
from lightning_supcon.losses import SupConLoss, supcon_loss
from lightning_supcon.models import (
    Backbone,
    CrossEntropyModule,
    LinearProbeModule,
    ProjectionHead,
    ResNet,
    Schedule,
    SmallCNN,
    SupConModule,
    build_encoder,
    export_encoder,
)
from lightning_supcon.models.loading import load_encoder

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
    "MetricsSummary",
    "MultiViewDataModule",
    "ProjectionHead",
    "ResNet",
    "Schedule",
    "SmallCNN",
    "SupConLoss",
    "SupConModule",
    "build_encoder",
    "export_encoder",
    "load_encoder",
    "supcon_loss",
]
__version__ = "0.1.0"
