"""Lightning callbacks."""

from lightning_supcon.callbacks.embedding_plot import EmbeddingPlot
from lightning_supcon.callbacks.embedding_writer import EmbeddingWriter
from lightning_supcon.callbacks.last_validation import ValidateLastEpoch
from lightning_supcon.callbacks.preemption import PreemptionCheckpoint
from lightning_supcon.callbacks.run_checkpoint import RunCheckpoint
from lightning_supcon.callbacks.summary import MetricsSummary

__all__ = [
    "EmbeddingPlot",
    "EmbeddingWriter",
    "MetricsSummary",
    "PreemptionCheckpoint",
    "RunCheckpoint",
    "ValidateLastEpoch",
]
