"""The LightningModules (SupCon pretraining, linear probe / fine-tuning, cross-entropy baseline) and their parts:
online evaluation, optimiser and schedule, checkpoint metadata. The networks they train are in
:mod:`lightning_supcon.nets`."""

from lightning_supcon.models.cross_entropy import CrossEntropyModule
from lightning_supcon.models.linear_probe import LinearProbeModule
from lightning_supcon.models.online_eval import OnlineEval, OnlineEvaluation
from lightning_supcon.models.optimization import Schedule
from lightning_supcon.models.supcon_module import SupConModule

__all__ = ["CrossEntropyModule", "LinearProbeModule", "OnlineEval", "OnlineEvaluation", "Schedule", "SupConModule"]
