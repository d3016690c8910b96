"""lightning_supcon: Supervised Contrastive Learning (Khosla et al., 2020) for PyTorch Lightning."""

from lightning_supcon.losses import SupConLoss, supcon_loss

__all__ = ["SupConLoss", "supcon_loss"]
__version__ = "0.1.0"
