"""Trainer plugins: BatchNorm synchronised over the global batch on any device (CPU processes included).

``Trainer(sync_batchnorm=True)`` converts BatchNorm layers to PyTorch's ``nn.SyncBatchNorm``, which runs on GPUs
only. :class:`GlobalBatchNormSync` converts them to :class:`~lightning_supcon.nets.batchnorm.GlobalBatchNorm`
instead, which gives the same statistics and gradients with any ``torch.distributed`` backend. Like
``sync_batchnorm``, the Trainer applies it for fitting under DDP and reverts it at the end, so checkpoints hold
plain BatchNorm layers. Use one or the other, not both (the Trainer refuses both)::

    trainer:
      strategy: ddp
      plugins:
        - class_path: lightning_supcon.plugins.GlobalBatchNormSync
"""

from __future__ import annotations

from pytorch_lightning.plugins import LayerSync
from torch import nn

from lightning_supcon.nets.batchnorm import GlobalBatchNorm


def refuse_sync_batchnorm_on_cpu(module: nn.Module) -> None:
    """Refuse PyTorch's ``SyncBatchNorm`` in training mode on CPU, with the fix (it would raise mid-step).

    Called by the project's LightningModules in ``on_fit_start``.

    Raises:
        ValueError: If ``module`` is on CPU and holds a ``nn.SyncBatchNorm`` in training mode.
    """
    on_cpu = all(p.device.type == "cpu" for p in module.parameters())
    if on_cpu and any(isinstance(m, nn.SyncBatchNorm) and m.training for m in module.modules()):
        raise ValueError(
            "`sync_batchnorm: true` converts BatchNorm layers to PyTorch's SyncBatchNorm, which runs on GPUs "
            "only. On CPU processes set `sync_batchnorm: false` and add the plugin "
            "`lightning_supcon.plugins.GlobalBatchNormSync` (as configs/trainer/ddp_cpu.yaml does)."
        )


class GlobalBatchNormSync(LayerSync):
    """Synchronise a model's BatchNorm layers over all processes with :class:`GlobalBatchNorm`.

    Example:
        >>> model = GlobalBatchNormSync().apply(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
        >>> type(model[1]).__name__
        'GlobalBatchNorm'
    """

    def apply(self, model: nn.Module) -> nn.Module:
        return GlobalBatchNorm.convert(model)

    def revert(self, model: nn.Module) -> nn.Module:
        return GlobalBatchNorm.revert(model)
