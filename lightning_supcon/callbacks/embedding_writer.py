"""``EmbeddingWriter``: save the embeddings of the whole predict set, gathered across processes, in one file pair."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch import Tensor

from lightning_supcon.evaluation.embeddings import CLASS_NAMES_KEY, class_names_tensor
from lightning_supcon.utils import distributed

_INDEX_KEY = "_index"


class EmbeddingWriter(BasePredictionWriter):
    """On ``predict``, write every tensor that ``predict_step`` returns to ``<output_dir>/embeddings_<split>.pt``.

    ``predict_step`` returns a dict of per-sample tensors, e.g. ``{"features", "projections", "labels"}``
    (:class:`~lightning_supcon.SupConModule`) or ``{"features", "logits", "labels"}`` (the linear probe and the
    cross-entropy model); a bare tensor is stored as ``"features"``. Batches are moved to the CPU as they come; at
    the end of the epoch the rows of all processes are gathered (ragged sizes allowed), put back in data-set order
    when the loader's sample indices are known, and rank 0 writes:

    - ``embeddings.pt``: a dict of tensors, ``torch.load(path, weights_only=True)``;
    - ``embeddings.npz``: the same arrays, ``numpy.load(path)``.

    ``<split>`` is the DataModule's ``predict_split`` (``train``, ``val``, ``test`` or ``ood``, see
    :class:`~lightning_supcon.data.MultiViewDataModule`); the stem is ``embeddings`` when the DataModule has none.
    Floating-point tensors are stored as float32 (bf16 has no NumPy type). With several predict loaders the files are
    ``<stem>_<i>.pt`` / ``.npz``. The DataModule's class names (``classes``: folder names, a list's names) are
    stored under ``class_names`` (:func:`~lightning_supcon.evaluation.embeddings.read_class_names` reads them), so
    the files say which class each label is. Rank zero prints ``Embeddings: <path>.pt (N rows: keys)`` for each file.

    Command line: ``--trainer.callbacks+=lightning_supcon.callbacks.EmbeddingWriter`` appends the callback to those
    of the config, and ``--trainer.callbacks.output_dir=DIR`` sets the last one added; run ``predict`` once per
    ``--data.init_args.predict_split`` (``train``, ``val``; ``ood`` for ``--ood``) for the files that
    :mod:`lightning_supcon.evaluate` compares (its docstring has the loop).

    Args:
        output_dir: Folder of the output files (created if missing).
        filename: Stem of the output files; ``None``: ``embeddings_<predict_split>`` (``embeddings`` without one).

    Raises:
        ValueError: If ``predict_step`` returns something other than a tensor or a dict of tensors with the batch
            size as first dimension.
    """

    def __init__(self, output_dir: str = "embeddings", filename: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.filename = filename
        self._buffers: dict[int, dict[str, list[Tensor]]] = {}

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._buffers = {}

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        outputs = {"features": prediction} if isinstance(prediction, Tensor) else prediction
        if not isinstance(outputs, dict) or not all(isinstance(v, Tensor) for v in outputs.values()):
            raise ValueError(
                f"EmbeddingWriter expects `predict_step` to return a tensor or a dict of tensors, but got "
                f"{type(prediction).__name__}."
            )
        sizes = {key: value.shape[0] if value.dim() else 0 for key, value in outputs.items()}
        n = next(iter(sizes.values()), 0)
        if any(size != n for size in sizes.values()):
            raise ValueError(f"Expected every predicted tensor to have the batch size first, but got sizes {sizes}.")
        if batch_indices is not None and len(batch_indices) == n:
            outputs = outputs | {_INDEX_KEY: torch.as_tensor(list(batch_indices), dtype=torch.long)}
        buffer = self._buffers.setdefault(dataloader_idx, {})
        for key, value in outputs.items():
            value = value.detach()
            buffer.setdefault(key, []).append(value.float().cpu() if value.is_floating_point() else value.cpu())

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = pl_module.device
        single = len(self._buffers) == 1
        for dataloader_idx, buffer in sorted(self._buffers.items()):
            local = {key: torch.cat(chunks) for key, chunks in buffer.items()}
            sizes = distributed.gather_sizes(next(iter(local.values())).shape[0], device)
            gathered = {key: distributed.gather(value.to(device), sizes).cpu() for key, value in local.items()}
            index = gathered.pop(_INDEX_KEY, None)
            if index is not None:  # back to data-set order (the distributed sampler interleaves the ranks)
                order = index.argsort()
                gathered = {key: value[order] for key, value in gathered.items()}
            names = getattr(getattr(trainer, "datamodule", None), "classes", None)
            if isinstance(names, list) and all(isinstance(name, str) for name in names):
                gathered[CLASS_NAMES_KEY] = class_names_tensor(names)
            if trainer.is_global_zero:
                stem = self.stem(trainer)
                self._save(gathered, stem if single else f"{stem}_{dataloader_idx}")
        self._buffers = {}

    def stem(self, trainer: pl.Trainer) -> str:
        """The output files' stem: ``filename``, else ``embeddings_<predict_split>``, else ``embeddings``."""
        if self.filename is not None:
            return self.filename
        split = getattr(getattr(trainer, "datamodule", None), "predict_split", None)
        return f"embeddings_{split}" if isinstance(split, str) else "embeddings"

    def _save(self, tensors: dict[str, Tensor], stem: str) -> None:
        folder = Path(self.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(tensors, folder / f"{stem}.pt")
        arrays: dict[str, Any] = {key: value.numpy() for key, value in tensors.items()}
        np.savez(folder / f"{stem}.npz", **arrays)
        per_sample = [key for key in tensors if key != CLASS_NAMES_KEY]
        rows = tensors[per_sample[0]].shape[0] if per_sample else 0
        names = f", {CLASS_NAMES_KEY}" if CLASS_NAMES_KEY in tensors else ""
        print(f"Embeddings: {folder / stem}.pt and .npz ({rows} rows: {', '.join(per_sample)}){names}", flush=True)
