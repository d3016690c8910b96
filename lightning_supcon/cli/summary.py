"""Print the final metrics of a run as a table, on rank zero."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only


class MetricsSummary(pl.Callback):
    """At the end of ``fit``, print every logged ``val/`` (and ``train/``) metric with the elapsed time.

    Args:
        prefixes: Metric-name prefixes to print.
    """

    def __init__(self, prefixes: tuple[str, ...] = ("val/", "train/")) -> None:
        self.prefixes = prefixes

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(self.prefixes)}
        if not metrics:
            return
        width = max(len(k) for k in metrics)
        lines = [f"Final metrics after {trainer.current_epoch} epochs ({trainer.global_step} steps):"]
        lines += [f"  {name:<{width}}  {value:.4f}" for name, value in sorted(metrics.items())]
        print("\n".join(lines), flush=True)
