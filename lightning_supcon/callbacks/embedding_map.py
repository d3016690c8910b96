"""Map features to the plane and draw them: the pure functions behind :class:`EmbeddingPlot`.

Features are L2-normalised (the geometry of the SupCon loss [0] and of the kNN monitor) and reduced to two
dimensions with UMAP [1] when ``umap-learn`` is installed (``pip install lightning-supcon[umap]``), else t-SNE [2]
from scikit-learn; PCA is the fast, deterministic choice for tests and very large sets.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362 (Fig. 1)
- [1] McInnes et al., UMAP: Uniform Manifold Approximation and Projection, 2018, https://arxiv.org/abs/1802.03426
- [2] van der Maaten and Hinton, Visualizing Data using t-SNE, JMLR 9, 2008
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

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


def plot_embedding(
    points: np.ndarray,
    labels: Tensor | np.ndarray,
    path: str | Path,
    title: str = "",
    class_names: Sequence[str] | None = None,
) -> Path:
    """Draw a scatter plot of 2-D points coloured by class and save it as a PNG (matplotlib's Agg canvas).

    Args:
        points: ``(N, 2)`` coordinates.
        labels: ``(N,)`` integer classes; up to 20 classes get a legend.
        path: Where the PNG goes; parent folders are created.
        title: The figure's title.
        class_names: The name of each class index, for the legend (``None``: the indices; -1 is "unknown").

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
            name = "unknown" if c < 0 else class_names[c] if class_names is not None and c < len(class_names) else c
            ax.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.8, color=palette(i), label=str(name))
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


def balanced_quota(counts: list[int], size: int) -> int:
    """The per-class cap ``q`` of a class-balanced sample of at most ``size`` rows: the largest integer with
    ``sum_c min(n_c, q) <= size`` (classes smaller than ``q`` are taken whole, the others ``q`` rows each).

    Example:
        >>> balanced_quota([5, 100, 100], size=45), balanced_quota([5, 6], size=100)
        (20, 6)
    """
    remaining, left = size, len(counts)
    for count in sorted(counts):
        share = remaining // left
        if count > share:
            return share
        remaining, left = remaining - count, left - 1
    return max(counts, default=0)


def keep_stratified_subset(keys: Tensor, labels: Tensor, *tensors: Tensor, size: int) -> tuple[Tensor, ...]:
    """A class-balanced random sample of ``min(N, size)`` rows: in each class the rows of the largest random
    ``keys``, :func:`balanced_quota` rows per class (a smaller class whole), and the rows left over one more each for
    the classes whose next row has the largest key; kept in their original order.

    Every class is drawn (a small class whole) instead of a uniform sample's expected share, so rare classes stay
    visible in a map. It can be updated batch by batch and merged across ranks by concatenating and subsampling
    again: more rows or classes only lower the cap, so no row dropped earlier could have been chosen later.

    Args:
        keys: ``(N,)`` random keys (e.g. ``torch.rand`` from a seeded generator: the sample is then seeded).
        labels: ``(N,)`` integer classes (any values).
        *tensors: Tensors with ``N`` rows, subsampled alike.
        size: Rows to keep.

    Returns:
        ``(keys, labels, *tensors)`` of the kept rows.

    Example:
        >>> keys = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.3, 0.2])
        >>> labels = torch.tensor([0, 0, 0, 0, 0, 1])
        >>> keep_stratified_subset(keys, labels, torch.arange(6), size=3)[2].tolist()  # class 1's only row stays
        [1, 3, 5]
    """
    if len(keys) <= size:
        return (keys, labels, *tensors)
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    quota = balanced_quota(counts.tolist(), size)
    order = keys.argsort(descending=True, stable=True)
    order = order[inverse[order].argsort(stable=True)]  # grouped by class, largest keys first within each
    starts = counts.cumsum(0) - counts  # (C,) first position of each class in `order`
    rank_in_class = torch.arange(len(order)) - starts[inverse[order]]
    chosen = order[rank_in_class < quota]
    # The rows left over (size - chosen) go to the next row (rank `quota`) of the classes with the largest keys there.
    next_rows = order[rank_in_class == quota]
    extra = next_rows[keys[next_rows].argsort(descending=True, stable=True)[: size - len(chosen)]]
    kept = torch.cat([chosen, extra]).sort().values  # the original order
    return (keys[kept], labels[kept], *(t[kept] for t in tensors))
