"""Contrastive losses: :class:`SupConLoss` and its functional twin :func:`supcon_loss`."""

from lightning_supcon.losses.functional import supcon_loss
from lightning_supcon.losses.supcon import SupConLoss

__all__ = ["SupConLoss", "supcon_loss"]
