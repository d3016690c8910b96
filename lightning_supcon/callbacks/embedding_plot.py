"""``EmbeddingPlot``: a 2-D map of the validation features coloured by class, saved as a PNG and logged to W&B.

A picture of what SupCon [0] does: the encoder's features of one class pull together, the classes push apart.
The features are L2-normalised and reduced to two dimensions by :mod:`lightning_supcon.callbacks.embedding_map`
(UMAP [1] when ``umap-learn`` is installed, else t-SNE [2]; PCA for speed).

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362 (Fig. 1)
- [1] McInnes et al., UMAP: Uniform Manifold Approximation and Projection, 2018, https://arxiv.org/abs/1802.03426
- [2] van der Maaten and Hinton, Visualizing Data using t-SNE, JMLR 9, 2008
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor

from lightning_supcon.callbacks.embedding_map import (
    _TITLES,
    METHODS,
    Method,
    keep_random_subset,
    keep_stratified_subset,
    plot_embedding,
    reduce_to_2d,
    umap_available,
)
from lightning_supcon.utils import distributed

__all__ = [
    "METHODS",
    "EmbeddingPlot",
    "Method",
    "keep_random_subset",
    "keep_stratified_subset",
    "plot_embedding",
    "reduce_to_2d",
    "umap_available",
]


class EmbeddingPlot(pl.Callback):
    """Plot the validation features in 2-D every few epochs and at the end of fit.

    During validation it re-encodes the batches of the first validation loader, ``(images, labels)``, with
    ``pl_module(images)`` (the encoder features of :class:`~lightning_supcon.SupConModule`) and keeps a
    class-balanced random sample of at most ``max_points`` (default 2000) of them
    (:func:`~lightning_supcon.callbacks.embedding_map.keep_stratified_subset`: up to the same number per class, a
    small class whole; the same sample every epoch: the loader is not shuffled and the sampling is seeded). t-SNE
    on every sample would cost about 55 s a picture for 10,000 validation images on a laptop CPU. The title says
    how many of how many samples are drawn. After the validation epoch the samples of all ranks are gathered (every
    rank joins, also one that ran no batch), and rank zero draws
    ``<dir>/embeddings/epoch_XXX.png``, copies it to ``<dir>/embeddings_latest.png`` and logs it to every
    ``WandbLogger`` as a ``wandb.Image`` under ``log_key``. ``<dir>`` is the folder holding the checkpoints folder
    (the run's log folder), else ``trainer.log_dir``, else ``default_root_dir``. At the end of fit the last
    validation's features are plotted if they were not yet, and the PNG's path is printed.

    Args:
        every_n_epochs: Plot at the first validation at least this many epochs after the last plot.
        method: Reduction, ``"auto"``, ``"umap"``, ``"tsne"`` or ``"pca"`` (see :func:`reduce_to_2d`).
        max_points: At most this many validation samples are plotted (a class-balanced random sample), >= 3.
        filename: Name of the per-epoch PNG inside ``embeddings/``; ``{epoch}`` is replaced.
        dirpath: Folder for the plots instead of the run's folder.
        log_key: W&B key of the image.
        seed: Seed of the subsampling and of the reduction.

    Raises:
        ValueError: For ``every_n_epochs < 1``, ``max_points < 3``, an unknown ``method`` or a ``filename``
            without the ``.png`` suffix.
        ModuleNotFoundError: For ``method="umap"`` without ``umap-learn``.
    """

    def __init__(
        self,
        every_n_epochs: int = 5,
        method: Method = "auto",
        max_points: int = 2000,
        filename: str = "epoch_{epoch:03d}.png",
        dirpath: str | None = None,
        log_key: str = "val/embeddings",
        seed: int = 0,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"Expected argument `every_n_epochs` to be >= 1, but got {every_n_epochs}.")
        if max_points < 3:
            raise ValueError(f"Expected argument `max_points` to be >= 3, but got {max_points}.")
        if method not in METHODS:
            raise ValueError(f"Expected argument `method` to be one of {METHODS}, but got {method!r}.")
        if method == "umap" and not umap_available():
            raise ModuleNotFoundError("`method='umap'` needs umap-learn: pip install 'lightning-supcon[umap]'.")
        if not filename.endswith(".png"):
            raise ValueError(f"Expected argument `filename` to end with '.png', but got {filename!r}.")
        self.every_n_epochs = every_n_epochs
        self.method: Method = method
        self.max_points = max_points
        self.filename = filename
        self.dirpath = dirpath
        self.log_key = log_key
        self.seed = seed
        self.last_path: Path | None = None
        self._dir: Path | None = None
        self._next_epoch = every_n_epochs  # plot when current_epoch + 1 reaches it
        self._reset()
        self._pending: tuple[Tensor, Tensor, int, int] | None = None  # rank zero: features, labels, of N, epoch
        self._loaded_epoch: int | None = None  # the epoch of the checkpoint a validate / test run loaded

    def _reset(self) -> None:
        self._keys = torch.empty(0)
        self._features: Tensor | None = None
        self._labels = torch.empty(0, dtype=torch.long)
        self._seen = 0  # validation samples of this rank, sampled or not
        self._generator = torch.Generator().manual_seed(self.seed + distributed.rank())

    def _output_dir(self, trainer: pl.Trainer) -> Path:
        """Call on every rank: ``trainer.log_dir`` is a collective."""
        if self.dirpath is not None:
            return Path(self.dirpath)
        checkpoint = trainer.checkpoint_callback
        ckpt_dir = getattr(checkpoint, "dirpath", None)
        if ckpt_dir:
            return Path(ckpt_dir).parent
        return Path(trainer.log_dir or trainer.default_root_dir)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """``validate`` / ``test`` from a checkpoint: label the picture with the checkpoint's epoch, not 0."""
        self._loaded_epoch = checkpoint.get("epoch")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._dir = self._output_dir(trainer)
        self._next_epoch = trainer.current_epoch + self.every_n_epochs
        self._pending = None
        self.last_path = None

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or dataloader_idx != 0:
            return
        if not (isinstance(batch, list | tuple) and len(batch) >= 2 and isinstance(batch[0], Tensor)):
            raise ValueError(f"EmbeddingPlot expects validation batches `(images, labels)`, but got {type(batch)}.")
        images, labels = batch[0], batch[1]
        with torch.no_grad():
            features = pl_module(images).detach().float().cpu()  # (B, feature_dim)
        if features.dim() != 2 or len(features) != len(labels):
            raise ValueError(f"Expected `pl_module(images)` of shape ({len(labels)}, D), got {tuple(features.shape)}.")
        keys = torch.rand(len(features), generator=self._generator)
        old = self._features if self._features is not None else features[:0]
        self._seen += len(features)
        self._keys, self._labels, self._features = keep_stratified_subset(
            torch.cat([self._keys, keys]),
            torch.cat([self._labels, torch.as_tensor(labels).long().cpu()]),
            torch.cat([old, features]),
            size=self.max_points,
        )

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:  # the same on every rank
            return
        if self._dir is None:  # validate / test without fit
            self._dir = self._output_dir(trainer)
        # Every rank joins every gather, also a rank that ran no batch (no features of its own): it sends (0, D).
        dims = distributed.gather_sizes(0 if self._features is None else self._features.shape[1], pl_module.device)
        seen = sum(distributed.gather_sizes(self._seen, pl_module.device))
        if max(dims) == 0:  # no rank saw a batch
            self._reset()
            return
        own = self._features if self._features is not None else torch.zeros(0, max(dims))
        sizes = distributed.gather_sizes(len(self._keys), pl_module.device)
        keys, features, labels = (
            distributed.gather(t.to(pl_module.device), sizes).cpu() for t in (self._keys, own, self._labels)
        )
        self._reset()
        if not trainer.is_global_zero:
            return
        _, labels, features = keep_stratified_subset(keys, labels, features, size=self.max_points)
        fitting = trainer.state.fn == TrainerFn.FITTING
        epoch = trainer.current_epoch if fitting or self._loaded_epoch is None else self._loaded_epoch
        self._pending = (features, labels, seen, epoch)
        if not fitting or trainer.current_epoch + 1 >= self._next_epoch:
            self._plot(trainer)
            self._next_epoch = trainer.current_epoch + 1 + self.every_n_epochs
        if not fitting and self.last_path is not None:
            print(f"Embedding plot: {self.last_path}", flush=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if self._pending is not None:
            self._plot(trainer)
        if self.last_path is not None:
            print(f"Embedding plot: {self.last_path}", flush=True)

    def _plot(self, trainer: pl.Trainer) -> None:
        """Rank zero: draw the pending features, copy to the stable name, log to W&B."""
        assert self._pending is not None and self._dir is not None
        features, labels, seen, epoch = self._pending
        self._pending = None
        if len(features) < 3:
            return
        method: Method = self.method if self.method != "auto" else "umap" if umap_available() else "tsne"
        points = reduce_to_2d(features, method, seed=self.seed)
        sample = f"{len(features)} of {seen} validation features (class-balanced sample, seed {self.seed})"
        title = (
            f"{_TITLES[method]} of {sample if len(features) < seen else f'{seen} validation features'}, epoch {epoch}"
        )
        names = getattr(getattr(trainer, "datamodule", None), "classes", None)  # the legend names the classes
        where = self._dir / "embeddings" / self.filename.format(epoch=epoch)
        path = plot_embedding(points, labels, where, title, names if isinstance(names, list) else None)
        shutil.copyfile(path, self._dir / "embeddings_latest.png")
        self.last_path = path
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(self.log_key, [str(path)], step=trainer.global_step, caption=[f"epoch {epoch}"])
