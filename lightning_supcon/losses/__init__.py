"""Contrastive losses: :class:`SupConLoss`, its functional twin :func:`supcon_loss` and their options record
:class:`SupConOptions`."""

from lightning_supcon.losses.functional import supcon_loss
from lightning_supcon.losses.options import SupConOptions
from lightning_supcon.losses.supcon import SupConLoss

__all__ = ["SupConLoss", "SupConOptions", "supcon_loss"]
