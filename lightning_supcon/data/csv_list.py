"""``CsvDataModule``: images listed in CSV/TSV files of ``path,label`` rows, the paths relative to a root folder.

The common format when images are not sorted into class folders (Kaggle-style ``train.csv``, medical and
satellite data sets). Each list is read with Python's ``csv`` module; a label is a class name, or a class index
when every label of the training list is an integer (:func:`~lightning_supcon.data.labels.class_names`), or -1 for
an unknown class; a blank label is refused, naming its row. Everything else,
grayscale or RGB decoding, the seeded validation split, ``mean``/``std`` ``"auto"``, is
:class:`~lightning_supcon.data.images.ImageDataModule`'s.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from typing import Any

from lightning_supcon.data.images import ImageDataModule, LabelledImages, Split, readable_only
from lightning_supcon.data.labels import RawLabel, class_names


def read_image_list(
    path: str,
    root: str | None = None,
    delimiter: str | None = None,
    header: bool | None = None,
    path_column: str = "path",
    label_column: str | None = "label",
) -> LabelledImages:
    """The images and labels of a CSV/TSV list of ``path,label`` rows.

    Args:
        path: The list file.
        root: The folder the image paths are relative to; ``None``: the list's own folder. Absolute paths are kept.
        delimiter: The column separator; ``None``: a tab for ``.tsv`` and ``.tab`` files, else a comma.
        header: Whether the first row names the columns; ``None``: it does when it holds both ``path_column`` and
            ``label_column``. With a header the two columns are found by name (other columns are ignored);
            without one the path is the first column and the label the second.
        path_column: The image column's name in the header.
        label_column: The label column's name in the header; ``None`` reads the paths only (an out-of-distribution
            list): a label column may be there or not, blank or not, the header is recognised by ``path_column``
            alone, and every label is ``-1``.

    Returns:
        The absolute or root-joined image paths, their labels as written (stripped; their type is the training
        list's, :func:`~lightning_supcon.data.labels.class_names`) and ``path`` as the source's name.

    Raises:
        FileNotFoundError: If the list, or an image it names, does not exist (the first few named, with their
            rows and a hint when the first row looks like a header).
        ValueError: For an empty list, a header without the named columns, a row with too few columns, or a blank
            label.

    Example:
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> for name in ("a.png", "b.png"):
        ...     _ = open(os.path.join(folder, name), "wb")
        >>> with open(os.path.join(folder, "train.csv"), "w") as f:
        ...     _ = f.write("path,label\\na.png,cat\\nb.png,dog\\n")
        >>> found = read_image_list(os.path.join(folder, "train.csv"))
        >>> [os.path.basename(p) for p in found.images], found.labels
        (['a.png', 'b.png'], ['cat', 'dog'])
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected an image list file (CSV/TSV), but {path!r} is not a file.")
    if delimiter is None:
        delimiter = "\t" if path.lower().endswith((".tsv", ".tab")) else ","
    delimiter = {"\\t": "\t", "tab": "\t"}.get(delimiter, delimiter)  # `--data.delimiter '\t'` from a shell
    if len(delimiter) != 1:
        raise ValueError(f"Expected `delimiter` to be one character (or '\\t' for a tab), but got {delimiter!r}.")
    with open(path, newline="", encoding="utf-8-sig") as file:
        rows = [row for row in csv.reader(file, delimiter=delimiter) if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"Expected `path,label` rows in {path!r}, but it is empty.")
    names = [cell.strip() for cell in rows[0]]
    wanted = (path_column,) if label_column is None else (path_column, label_column)
    if header is None:
        header = all(name in names for name in wanted)
    first_row = 2 if header else 1
    columns: tuple[int, ...] = (0,) if label_column is None else (0, 1)
    if header:
        missing = [name for name in wanted if name not in names]
        if missing:
            raise ValueError(f"Expected columns {missing} in the header of {path!r}, but it has {names}.")
        columns = tuple(names.index(name) for name in wanted)
        rows = rows[1:]
        if not rows:
            raise ValueError(f"Expected rows below the header of {path!r}, but it has only the header.")
    short = next((i for i, row in enumerate(rows) if len(row) <= max(columns)), None)
    if short is not None:
        raise ValueError(
            f"Expected >= {max(columns) + 1} columns separated by {delimiter!r} in row {short + first_row} of "
            f"{path!r}, but got {rows[short]}."
        )
    base = os.path.dirname(os.path.abspath(path)) if root is None else root
    paths = [os.path.join(base, row[columns[0]].strip()) for row in rows]
    missing_rows = [(i + first_row, p) for i, p in enumerate(paths) if not os.path.isfile(p)]
    if missing_rows:
        shown = ", ".join(f"row {row}: {p!r}" for row, p in missing_rows[:3])
        hint = (
            " (is the first row a header? set `header: true` and name its columns with `path_column`/`label_column`)"
            if missing_rows[0][0] == 1
            else ""
        )
        raise FileNotFoundError(f"{len(missing_rows)} image(s) listed in {path!r} do not exist: {shown}{hint}.")
    if label_column is None:
        return LabelledImages(paths, [-1] * len(paths), path)
    labels = [row[columns[1]].strip() for row in rows]
    blank = next((i for i, label in enumerate(labels) if not label), None)
    if blank is not None:
        raise ValueError(
            f"Expected a label in row {blank + first_row} of {path!r}, but it is blank: write its class, or -1 for an "
            "unknown class."
        )
    return LabelledImages(paths, labels, path)


class CsvDataModule(ImageDataModule):
    """Images listed in CSV/TSV files (``path,label`` rows, paths relative to ``root``).

    Args:
        train_list: The training list.
        val_list: The validation list; ``None``: a stratified ``val_fraction`` of the training list, seeded by
            ``split_seed``.
        test_list: The test list; ``None`` tests on the validation set.
        ood_list: Optional list of out-of-distribution images, of none of the training classes: its paths are read
            (a label column may be there, blank or not, and is ignored). With it a model logs ``val/ood_auroc``,
            ``val/ood_fpr95``, ... and ``predict_split: ood`` embeds it.
        root: The folder the listed paths are relative to; ``None``: each list's own folder.
        delimiter: The column separator; ``None``: a tab for ``.tsv``/``.tab`` files, else a comma.
        header: Whether each list's first row names its columns; ``None`` (auto): when it holds both
            ``path_column`` and ``label_column``.
        path_column: The image column's name in a header.
        label_column: The label column's name in a header.
        skip_corrupt: Leave out, with one warning, the images PIL cannot read (see
            :class:`~lightning_supcon.data.image_folder.ImageFolderDataModule`).
        **kwargs: The arguments of :class:`~lightning_supcon.data.images.ImageDataModule` (``image_size``,
            ``resize``, ``channels``, ``mean``, ``std``, ``val_fraction``, ``split_seed``, and ``augment``, default
            its ImageNet recipe) and of
            :class:`~lightning_supcon.data.base.MultiViewDataModule`.

    Raises:
        FileNotFoundError: For a missing list or listed image (on first use).
        ValueError: For a malformed list, or a validation or test label that is not a training class.

    Example:
        >>> dm = CsvDataModule("data/train.csv", channels=1, image_size=28, resize=28, mean="auto", std="auto")
        >>> dm.in_channels, dm.val_fraction, dm.augment.scale
        (1, 0.1, (0.08, 1.0))
    """

    def __init__(
        self,
        train_list: str,
        val_list: str | None = None,
        test_list: str | None = None,
        ood_list: str | None = None,
        root: str | None = None,
        delimiter: str | None = None,
        header: bool | None = None,
        path_column: str = "path",
        label_column: str = "label",
        skip_corrupt: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.train_list, self.val_list, self.test_list, self.ood_list = train_list, val_list, test_list, ood_list
        self.root, self.delimiter, self.header, self.skip_corrupt = root, delimiter, header, skip_corrupt
        self.path_column, self.label_column = path_column, label_column

    def class_names(self, labels: Sequence[RawLabel]) -> list[str]:
        """Class indices ``"0" .. "max"`` when every training label is an integer (or -1), else the sorted names;
        decided once, from the training list, for every list (:func:`~lightning_supcon.data.labels.class_names`)."""
        return class_names(labels, integer_text=True)

    def source(self, split: Split) -> LabelledImages | None:
        path = {"train": self.train_list, "val": self.val_list, "test": self.test_list, "ood": self.ood_list}[split]
        if path is None:
            return None
        label_column = None if split == "ood" else self.label_column  # an OOD list's labels are not read
        found = read_image_list(path, self.root, self.delimiter, self.header, self.path_column, label_column)
        return readable_only(found) if self.skip_corrupt else found
