"""Lightning callbacks of the library: the embedding plot and the embeddings writer.

The command's own run callbacks (checkpoints of a run folder, preemption, the last validation, the metrics summary,
the saved config) live with the command in :mod:`lightning_supcon.cli`.
"""

from lightning_supcon.callbacks.embedding_plot import EmbeddingPlot
from lightning_supcon.callbacks.embedding_writer import EmbeddingWriter

__all__ = ["EmbeddingPlot", "EmbeddingWriter"]
