"""``EmbeddingPlot``: a 2-D map of the validation features coloured by class, saved as a PNG and logged to W&B.

A picture of what SupCon [0] does: the encoder's features of one class pull together, the classes push apart.
The features are L2-normalised (the geometry of the loss and of the kNN monitor) and reduced to two dimensions with
UMAP [1] when ``umap-learn`` is installed (``pip install lightning-supcon[umap]``), else t-SNE [2] from
scikit-learn; PCA is the fast, deterministic choice for tests and very large sets.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362 (Fig. 1)
- [1] McInnes et al., UMAP: Uniform Manifold Approximation and Projection, 2018, https://arxiv.org/abs/1802.03426
- [2] van der Maaten and Hinton, Visualizing Data using t-SNE, JMLR 9, 2008
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any, Literal

import matplotlib
import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor

from lightning_supcon.utils import distributed

Method = Literal["auto", "umap", "tsne", "pca"]
METHODS: tuple[str, ...] = ("auto", "umap", "tsne", "pca")
_TITLES = {"umap": "UMAP", "tsne": "t-SNE", "pca": "PCA"}


def umap_available() -> bool:
    """Whether ``umap-learn`` can be imported."""
    return importlib.util.find_spec("umap") is not None


def reduce_to_2d(features: Tensor | np.ndarray, method: Method = "auto", seed: int = 0) -> np.ndarray:
    """Map features to the plane after L2-normalising them.

    Args:
        features: ``(N, D)`` features, ``N >= 3``.
        method: ``"umap"`` (cosine metric), ``"tsne"`` (on the first 50 principal components when ``D > 50``,
            perplexity ``min(30, (N - 1) / 3)``), ``"pca"``, or ``"auto"``: UMAP if installed, else t-SNE.
        seed: Random state of UMAP and t-SNE.

    Returns:
        ``(N, 2)`` float32 coordinates.

    Raises:
        ValueError: For an unknown ``method``, ``features`` not 2-D or fewer than 3 points.
        ModuleNotFoundError: For ``method="umap"`` without ``umap-learn``.

    Example:
        >>> reduce_to_2d(torch.randn(100, 16), method="pca").shape
        (100, 2)
    """
    if method not in METHODS:
        raise ValueError(f"Expected argument `method` to be one of {METHODS}, but got {method!r}.")
    x = torch.as_tensor(features).detach().float().cpu()
    if x.dim() != 2 or x.shape[0] < 3:
        raise ValueError(f"Expected features of shape (N >= 3, D), but got {tuple(x.shape)}.")
    x = torch.nn.functional.normalize(x, dim=1)
    if x.shape[1] < 2:  # one feature: the map is a line
        x = torch.cat([x, torch.zeros_like(x)], dim=1)
    data = x.numpy()
    if method == "auto":
        method = "umap" if umap_available() else "tsne"
    if method == "pca":
        from sklearn.decomposition import PCA

        points = PCA(n_components=2, random_state=seed).fit_transform(data)
    elif method == "tsne":
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE

        if data.shape[1] > 50:
            data = PCA(n_components=min(50, data.shape[0]), random_state=seed).fit_transform(data)
        perplexity = min(30.0, (data.shape[0] - 1) / 3.0)
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(data)
    else:
        if not umap_available():
            raise ModuleNotFoundError("`method='umap'` needs umap-learn: pip install 'lightning-supcon[umap]'.")
        import umap

        points = umap.UMAP(n_components=2, metric="cosine", random_state=seed).fit_transform(data)
    return np.asarray(points, dtype=np.float32)


def plot_embedding(points: np.ndarray, labels: Tensor | np.ndarray, path: str | Path, title: str = "") -> Path:
    """Draw a scatter plot of 2-D points coloured by class and save it as a PNG (matplotlib's Agg canvas).

    Args:
        points: ``(N, 2)`` coordinates.
        labels: ``(N,)`` integer classes; up to 20 classes get a legend.
        path: Where the PNG goes; parent folders are created.
        title: The figure's title.

    Returns:
        ``path`` as a ``Path``.
    """
    labels = np.asarray(torch.as_tensor(labels).cpu()).astype(np.int64).reshape(-1)
    if points.shape != (len(labels), 2):
        raise ValueError(f"Expected points of shape ({len(labels)}, 2), but got {points.shape}.")
    classes = np.unique(labels)
    fig = Figure(figsize=(6.4, 6.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = "tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "turbo"
    if len(classes) <= 20:
        palette = matplotlib.colormaps[cmap]
        for i, c in enumerate(classes):
            mask = labels == c
            ax.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.8, color=palette(i), label=str(c))
        ax.legend(markerscale=3, fontsize="small", loc="best", title="class")
    else:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.8, c=labels, cmap=cmap)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def keep_random_subset(keys: Tensor, *tensors: Tensor, size: int) -> tuple[Tensor, ...]:
    """The rows of the ``size`` largest random ``keys`` (all rows if fewer), in their original order.

    With keys drawn uniformly at random this is a uniform sample without replacement, and it can be updated batch
    by batch (and merged across ranks) by concatenating and subsampling again.

    Args:
        keys: ``(N,)`` random keys.
        *tensors: Tensors with ``N`` rows, subsampled alike.
        size: Rows to keep.

    Returns:
        ``(keys, *tensors)`` with ``min(N, size)`` rows each.

    Example:
        >>> keys, rows = keep_random_subset(torch.tensor([0.1, 0.9, 0.5, 0.7]), torch.arange(4), size=2)
        >>> rows.tolist()
        [1, 3]
    """
    if len(keys) <= size:
        return (keys, *tensors)
    top = keys.topk(size).indices.sort().values  # (size,), in the original order
    return (keys[top], *(t[top] for t in tensors))


class EmbeddingPlot(pl.Callback):
    """Plot the validation features in 2-D every few epochs and at the end of fit.

    During validation it re-encodes the batches of the first validation loader, ``(images, labels)``, with
    ``pl_module(images)`` (the encoder features of :class:`~lightning_supcon.SupConModule`) and keeps a uniform
    random subset of at most ``max_points`` of them (the same subset every epoch: the loader is not shuffled and the
    sampling seed is fixed). After the validation epoch the subsets of all ranks are gathered, and rank zero draws
    ``<dir>/embeddings/epoch_XXX.png``, copies it to ``<dir>/embeddings_latest.png`` and logs it to every
    ``WandbLogger`` as a ``wandb.Image`` under ``log_key``. ``<dir>`` is the folder holding the checkpoints folder
    (the run's log folder), else ``trainer.log_dir``, else ``default_root_dir``. At the end of fit the last
    validation's features are plotted if they were not yet, and the PNG's path is printed.

    Args:
        every_n_epochs: Plot at the first validation at least this many epochs after the last plot.
        method: Reduction, ``"auto"``, ``"umap"``, ``"tsne"`` or ``"pca"`` (see :func:`reduce_to_2d`).
        max_points: At most this many validation samples are plotted (a random subset), >= 3.
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
        self._pending: tuple[Tensor, Tensor, int] | None = None  # gathered on rank zero, not yet plotted
        self._loaded_epoch: int | None = None  # the epoch of the checkpoint a validate / test run loaded

    def _reset(self) -> None:
        self._keys = torch.empty(0)
        self._features: Tensor | None = None
        self._labels = torch.empty(0, dtype=torch.long)
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

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
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
        self._keys, self._features, self._labels = keep_random_subset(
            torch.cat([self._keys, keys]),
            torch.cat([old, features]),
            torch.cat([self._labels, torch.as_tensor(labels).long().cpu()]),
            size=self.max_points,
        )

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._features is None:
            return
        if self._dir is None:  # validate / test without fit
            self._dir = self._output_dir(trainer)
        sizes = distributed.gather_sizes(len(self._keys), pl_module.device)
        keys, features, labels = (
            distributed.gather(t.to(pl_module.device), sizes).cpu() for t in (self._keys, self._features, self._labels)
        )
        self._reset()
        if not trainer.is_global_zero:
            return
        _, features, labels = keep_random_subset(keys, features, labels, size=self.max_points)
        fitting = trainer.state.fn == TrainerFn.FITTING
        epoch = trainer.current_epoch if fitting or self._loaded_epoch is None else self._loaded_epoch
        self._pending = (features, labels, epoch)
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
        features, labels, epoch = self._pending
        self._pending = None
        if len(features) < 3:
            return
        method: Method = self.method if self.method != "auto" else "umap" if umap_available() else "tsne"
        points = reduce_to_2d(features, method, seed=self.seed)
        title = f"{_TITLES[method]} of {len(features)} validation features, epoch {epoch}"
        path = plot_embedding(points, labels, self._dir / "embeddings" / self.filename.format(epoch=epoch), title)
        shutil.copyfile(path, self._dir / "embeddings_latest.png")
        self.last_path = path
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(self.log_key, [str(path)], step=trainer.global_step, caption=[f"epoch {epoch}"])
