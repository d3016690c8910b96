"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009) from their "python version" pickle batches.

The files are read directly (``pickle`` with ``latin1`` encoding, as the data set's page describes) into one
uint8 array; torchvision only downloads them. The official test split is the validation (and test) set, as in
SupCon [0]. 32 px, crop scale ``(0.2, 1)``, no blur.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- Data: https://www.cs.toronto.edu/~kriz/cifar.html
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torchvision import datasets

from lightning_supcon.data.base import MultiViewDataModule, Split
from lightning_supcon.data.labels import LabelledDataset
from lightning_supcon.data.transforms import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD


class ArrayImageDataset(LabelledDataset):
    """``(PIL RGB image, label)`` samples from a uint8 ``(N, H, W, 3)`` array and ``N`` integer labels."""

    def __init__(self, images: np.ndarray, labels: list[int]) -> None:
        if len(images) != len(labels):
            raise ValueError(f"Expected as many labels as images, but got {len(labels)} and {len(images)}.")
        super().__init__(images, labels, Image.fromarray)


class CIFARDataModule(MultiViewDataModule):
    """Shared reader of the CIFAR pickle batches; use :class:`CIFAR10DataModule` or :class:`CIFAR100DataModule`.

    Args:
        data_dir: Folder holding (or to receive) the extracted archive, e.g. ``data/cifar-10-batches-py``.
        download: Download and extract the archive into ``data_dir`` if it is missing (needs internet).
        **kwargs: The arguments of :class:`MultiViewDataModule` (``batch_size``, ``n_views``, ``augment_on``, ...).

    Raises:
        FileNotFoundError: When a split is loaded while its file is missing (says where, and how to get it).
        RuntimeError: When ``download=True`` and the download fails.
    """

    in_channels = 3
    image_size = 32
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    meta_file: str
    names_key: str
    torchvision_class: type[datasets.VisionDataset]

    def __init__(self, data_dir: str = "data", download: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data_dir = data_dir
        self.download = download

    @property
    def root(self) -> Path:
        """The folder the pickle batches are expected in."""
        return Path(self.data_dir) / self.folder

    @property
    def classes(self) -> list[str]:
        """The class names of the archive's meta file (``"0" .. str(num_classes - 1)`` when it is missing)."""
        path = self.root / self.meta_file
        if not path.is_file():
            return super().classes
        with open(path, "rb") as f:
            return [str(name) for name in pickle.load(f, encoding="latin1")[self.names_key]]

    def _missing(self) -> list[Path]:
        return [self.root / name for name in self.train_files + self.test_files if not (self.root / name).is_file()]

    def prepare_data(self) -> None:
        """Download the archive when ``download=True`` and files are missing (Lightning runs it on one process)."""
        if not self.download or not self._missing():
            return
        try:
            self.torchvision_class(self.data_dir, train=True, download=True)  # type: ignore[call-arg]
        except Exception as error:  # network, disk or checksum: all end the same way for the user
            raise RuntimeError(
                f"Downloading {type(self).__name__} into {self.data_dir!r} failed: {error}. {self._how_to_get()}"
            ) from None

    def _how_to_get(self) -> str:
        url = self.torchvision_class.url  # type: ignore[attr-defined]
        return (
            f"Pass `download=True` (CLI: `--data.download true`) on a machine with internet, or download {url} "
            f"and extract it into {str(Path(self.data_dir))!r} (it unpacks to {self.folder}/)."
        )

    def _read(self, files: tuple[str, ...]) -> ArrayImageDataset:
        missing = self._missing()
        if missing:
            raise FileNotFoundError(
                f"{type(self).__name__}: expected the files {[p.name for p in missing]} in {str(self.root)!r}, "
                f"but they are missing. {self._how_to_get()}"
            )
        images: list[np.ndarray] = []
        labels: list[int] = []
        for name in files:
            with open(self.root / name, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(int(label) for label in entry[self.label_key])
        # (N, 3, 32, 32) rows of R, G, B planes -> (N, 32, 32, 3) as PIL wants
        return ArrayImageDataset(np.ascontiguousarray(np.concatenate(images).transpose(0, 2, 3, 1)), labels)

    def dataset(self, split: Split) -> ArrayImageDataset | None:
        """The training batches for ``"train"``, the test batch for ``"val"`` (the paper's protocol reports the
        test set); no separate test or OOD split."""
        files = {"train": self.train_files, "val": self.test_files}.get(split)
        return None if files is None else self._read(files)


class CIFAR10DataModule(CIFARDataModule):
    """CIFAR-10: 50,000 training and 10,000 test 32x32 RGB images of 10 classes.

    Args:
        data_dir: Folder holding (or to receive) ``cifar-10-batches-py/``.
        download: Download and extract the archive into ``data_dir`` if it is missing (needs internet).
        **kwargs: The arguments of :class:`MultiViewDataModule` (``batch_size``, ``n_views``, ``augment_on``, ...).

    Example:
        >>> dm = CIFAR10DataModule(data_dir="/nonexistent")
        >>> dm.num_classes, dm.image_size, str(dm.root)
        (10, 32, '/nonexistent/cifar-10-batches-py')
    """

    num_classes = 10
    mean = CIFAR10_MEAN
    std = CIFAR10_STD
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    label_key = "labels"
    meta_file, names_key = "batches.meta", "label_names"
    torchvision_class = datasets.CIFAR10


class CIFAR100DataModule(CIFARDataModule):
    """CIFAR-100: 50,000 training and 10,000 test 32x32 RGB images of 100 (fine) classes.

    Args:
        data_dir: Folder holding (or to receive) ``cifar-100-python/``.
        download: Download and extract the archive into ``data_dir`` if it is missing (needs internet).
        **kwargs: The arguments of :class:`MultiViewDataModule` (``batch_size``, ``n_views``, ``augment_on``, ...).

    Example:
        >>> CIFAR100DataModule(data_dir="data").num_classes
        100
    """

    num_classes = 100
    mean = CIFAR100_MEAN
    std = CIFAR100_STD
    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    label_key = "fine_labels"
    meta_file, names_key = "meta", "fine_label_names"
    torchvision_class = datasets.CIFAR100
