"""``HFDataModule``: a Hugging Face ``datasets`` data set on disk, an image column and a label column.

Either a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (read with
``datasets.load_from_disk``), or local files read by a packaged ``datasets`` builder (``datasets.load_dataset``:
``path="parquet"`` with ``data_files``, ``path="imagefolder"`` with ``data_dir``-style ``data_files``, or a local
folder of such files). Nothing is downloaded. The image column is read undecoded (``datasets.Image(decode=False)``;
file paths and encoded bytes are cast to it) and decoded by :func:`~lightning_supcon.data.decode.load_image`, the
decoder of every source (EXIF orientation, 16-bit data); the labels are class indices (integer or ``ClassLabel``
column, whose names become the classes) or class names (string column). Needs the optional extra:
``pip install 'lightning-supcon[hf]'``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any

from lightning_supcon.data.images import ImageDataModule, LabelledImages, Split
from lightning_supcon.data.labels import RawLabel, class_names

EXTRA_HINT = "pip install 'lightning-supcon[hf]'"


#: ``datasets``' packaged builders that read local ``data_files`` (anything else that is not a folder is a Hub name).
LOCAL_BUILDERS = ("parquet", "arrow", "csv", "json", "imagefolder", "text")


def import_datasets() -> Any:
    """The ``datasets`` package, or an ``ImportError`` naming the extra that installs it."""
    try:
        return importlib.import_module("datasets")
    except ImportError:
        raise ImportError(f"HFDataModule needs the Hugging Face `datasets` package (>= 2.14): {EXTRA_HINT}") from None


class HFImages:
    """The images of one ``datasets.Dataset`` column, by index, undecoded: ``{"bytes": ..., "path": ...}`` for
    :func:`~lightning_supcon.data.decode.load_image`."""

    def __init__(self, table: Any, column: str) -> None:
        self.table = table
        self.column = column

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image: dict[str, Any] = self.table[int(index)][self.column]
        return image


class HFDataModule(ImageDataModule):
    """A Hugging Face ``datasets`` image data set saved on disk, or local parquet or image files.

    Args:
        path: A ``save_to_disk`` folder (``dataset_dict.json`` or ``state.json`` inside), else what
            ``datasets.load_dataset`` takes for local files: a packaged builder (``"parquet"``, ``"imagefolder"``)
            with ``data_files``, or a local folder of data files.
        data_files: For a builder: a file or glob, or ``{split: file(s)}``, e.g.
            ``{"train": "data/train-*.parquet", "test": "data/test.parquet"}``.
        image_column: The column of images (``datasets.Image``, or file paths / encoded bytes to cast to it).
        label_column: The column of labels (``ClassLabel``, integers or strings).
        train_split: The training split's name.
        val_split: The validation split's name; ``None``: a stratified ``val_fraction`` of the training split,
            seeded by ``split_seed``.
        test_split: The test split's name; ``None`` tests on the validation set.
        ood_split: The name of a split of out-of-distribution images (no training class; its label column, if any,
            is not read). With it a model logs ``val/ood_auroc``, ``val/ood_fpr95``, ... and ``predict_split: ood``
            embeds it.
        cache_dir: Where ``load_dataset`` writes its Arrow cache; ``None``: ``datasets``' default
            (``~/.cache/huggingface/datasets`` or ``HF_DATASETS_CACHE``).
        **kwargs: The arguments of :class:`~lightning_supcon.data.images.ImageDataModule` (``image_size``,
            ``resize``, ``channels``, ``mean``, ``std``, ``val_fraction``, ``split_seed``, and ``augment``, default
            its ImageNet recipe) and of
            :class:`~lightning_supcon.data.base.MultiViewDataModule`.

    Raises:
        ImportError: Without the ``datasets`` package, naming the extra (at construction).
        ValueError: For a split or column the data set lacks, naming those it has (on first use).
        FileNotFoundError: If ``path`` is neither a folder nor one of :data:`LOCAL_BUILDERS` (on first use; a Hub
            name is never downloaded).

    Example:
        >>> dm = HFDataModule("data/my_dataset", image_column="img", label_column="fine_label", channels=3)
        >>> dm.image_column, dm.label_column, dm.val_split, dm.in_channels
        ('img', 'fine_label', None, 3)
    """

    def __init__(
        self,
        path: str,
        data_files: str | list[str] | dict[str, str | list[str]] | None = None,
        image_column: str = "image",
        label_column: str = "label",
        train_split: str = "train",
        val_split: str | None = None,
        test_split: str | None = None,
        ood_split: str | None = None,
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        import_datasets()
        super().__init__(**kwargs)
        self.path, self.data_files, self.cache_dir = path, data_files, cache_dir
        self.image_column, self.label_column = image_column, label_column
        self.train_split, self.val_split = train_split, val_split
        self.test_split, self.ood_split = test_split, ood_split
        self._tables: Any = None

    def _load(self) -> Any:
        """The ``DatasetDict`` (a lone ``Dataset`` becomes the training split)."""
        if self._tables is None:
            datasets = import_datasets()
            saved = any(os.path.isfile(os.path.join(self.path, f)) for f in ("dataset_dict.json", "state.json"))
            if saved:
                tables = datasets.load_from_disk(self.path)
            elif not os.path.isdir(self.path) and self.path not in LOCAL_BUILDERS:
                # Anything else is a Hub name to `load_dataset`: a misspelt folder would go to the network.
                raise FileNotFoundError(
                    f"Expected `path` to be a folder (saved by `save_to_disk`, or of data files) or one of "
                    f"{LOCAL_BUILDERS} with `data_files`, but {self.path!r} is none of these (nothing is downloaded)."
                )
            else:
                tables = datasets.load_dataset(self.path, data_files=self.data_files, cache_dir=self.cache_dir)
            if isinstance(tables, datasets.Dataset):
                tables = datasets.DatasetDict({self.train_split: tables})
            self._tables = tables
        return self._tables

    def _table(self, name: str, labelled: bool = True) -> Any:
        datasets = import_datasets()
        tables = self._load()
        if name not in tables:
            raise ValueError(f"Expected a split {name!r} in {self.path!r}, but it has {sorted(tables)}.")
        table = tables[name]
        columns = [self.image_column, self.label_column] if labelled else [self.image_column]
        for column in columns:
            if column not in table.column_names:
                raise ValueError(
                    f"Expected a column {column!r} in split {name!r} of {self.path!r}, but it has {table.column_names}."
                )
        table = table.select_columns(columns)
        # undecoded: load_image decodes every source alike (datasets' own decoder differs from PIL's convert)
        return table.cast_column(self.image_column, datasets.Image(decode=False))

    def source(self, split: Split) -> LabelledImages | None:
        name = {"train": self.train_split, "val": self.val_split, "test": self.test_split, "ood": self.ood_split}[split]
        if name is None:
            return None
        table = self._table(name, labelled=split != "ood")
        labels = [-1] * len(table) if split == "ood" else list(table[self.label_column])
        return LabelledImages(HFImages(table, self.image_column), labels, f"split {name!r} of {self.path!r}")

    def class_names(self, labels: Sequence[RawLabel]) -> list[str]:
        """A ``ClassLabel`` column's names; else from the labels (:func:`~lightning_supcon.data.labels.class_names`)."""
        feature = self._table(self.train_split).features[self.label_column]
        names = getattr(feature, "names", None)
        return list(names) if names else class_names(labels)
