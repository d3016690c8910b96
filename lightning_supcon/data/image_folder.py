"""``ImageFolderDataModule``: ImageNet or any class-per-folder tree (``train_dir/<class>/<image>``).

The classes are the sub-folders of the training tree, sorted (torchvision's ``ImageFolder`` convention); every
image is decoded as RGB, or as grayscale with ``channels=1`` (:class:`~lightning_supcon.data.images.ImageDataModule`
does the rest). The default recipe is SupCon's ImageNet one [0]: crop scale ``(0.08, 1)`` and SimCLR's Gaussian
blur [1]; evaluation resizes to ``image_size / 0.875`` (256 for 224) and takes the central square. On the device
path the loader workers decode and resize every image to that fixed size (the training crops are drawn from it on
the device).

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [1] Chen et al., SimCLR, ICML 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning_supcon.data.images import ImageDataModule, LabelledImages, Split, readable_only

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def scan_folder(root: str | Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names (sorted sub-folders) and ``(path, class index)`` samples of a class-per-folder tree.

    Args:
        root: The folder with one sub-folder per class.
        classes: The class names to index against (the training set's); ``None`` uses ``root``'s own.

    Raises:
        FileNotFoundError: If ``root`` is not a directory.
        ValueError: If it has no class folders, a class folder has no image, or a class is not in ``classes``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Expected a directory with one sub-folder per class, but {str(root)!r} is not one.")
    # Hidden folders (`.ipynb_checkpoints`, `.git`, ...) are no classes: torchvision's ImageFolder counts them.
    found = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not found:
        raise ValueError(f"Expected one sub-folder per class in {str(root)!r}, but it has none.")
    classes = found if classes is None else classes
    index = {name: i for i, name in enumerate(classes)}
    samples: list[tuple[str, int]] = []
    for name in found:
        if name not in index:
            raise ValueError(f"Class folder {str(root / name)!r} is not a class of the training set ({len(index)}).")
        samples += [(path, index[name]) for path in image_files(root / name)]
    return classes, samples


def image_files(folder: str | Path) -> list[str]:
    """The image files (:data:`IMAGE_EXTENSIONS`, any case) anywhere below ``folder``, links followed, hidden
    folders (``.ipynb_checkpoints``, ...) left out, sorted.

    Raises:
        FileNotFoundError: If ``folder`` is not a directory.
        ValueError: If it holds no image.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Expected a directory of images, but {str(folder)!r} is not one.")
    files = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]  # os.walk descends into what is left
        files += [os.path.join(dirpath, file) for file in filenames if file.lower().endswith(IMAGE_EXTENSIONS)]
    files.sort()
    if not files:
        raise ValueError(f"Expected images ({', '.join(IMAGE_EXTENSIONS)}) in {str(folder)!r}, found none.")
    return files


class ImageFolderDataModule(ImageDataModule):
    """A class-per-folder image tree such as ImageNet's; the classes are the sub-folders of ``train_dir``.

    Args:
        train_dir: Training images, ``train_dir/<class>/<image>``.
        val_dir: Validation images, the same layout; its classes must be among the training ones. ``None``: a
            stratified ``val_fraction`` of ``train_dir``, seeded by ``split_seed``.
        test_dir: Optional test images; ``None`` tests on the validation set.
        ood_dir: Optional out-of-distribution images, of none of the training classes: every image below it, in any
            layout (flat or in sub-folders, whose names are not read). With it a model logs ``val/ood_auroc``,
            ``val/ood_fpr95``, ... (the validation images are the in-distribution side) and ``predict_split: ood``
            embeds it.
        skip_corrupt: Check every file when the data sets are built and leave out those PIL cannot read, with
            one warning giving their number (costs a pass over the file headers; a file whose header is fine but
            whose data is truncated still raises when loaded). ``False``: an unreadable image raises an
            ``OSError`` naming it when loaded.
        **kwargs: The arguments of :class:`~lightning_supcon.data.images.ImageDataModule` (``image_size``,
            ``resize``, ``channels``, ``mean``, ``std``, ``val_fraction``, ``split_seed``, and ``augment``, default
            its ImageNet recipe) and of
            :class:`~lightning_supcon.data.base.MultiViewDataModule` (``batch_size``, ``augment_on``, ...).

    Raises:
        FileNotFoundError: When a directory is missing (on first use).
        ValueError: For an empty tree, an empty class folder or a class missing from ``train_dir``, and if
            ``skip_corrupt`` leaves nothing.

    Example:
        >>> dm = ImageFolderDataModule("imagenet/train", "imagenet/val", batch_size=128, augment_on="device")
        >>> dm.image_size, dm.resize, dm.augment.scale, dm.augment.blur_p, dm.in_channels
        (224, 256, (0.08, 1.0), 0.5, 3)
        >>> dm = ImageFolderDataModule("scans/train", channels=1, image_size=32, resize=32, mean="auto")
        >>> dm.in_channels, dm.resize, dm.val_fraction
        (1, 32, 0.1)
    """

    def __init__(
        self,
        train_dir: str,
        val_dir: str | None = None,
        test_dir: str | None = None,
        ood_dir: str | None = None,
        skip_corrupt: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.train_dir, self.val_dir, self.test_dir, self.ood_dir = train_dir, val_dir, test_dir, ood_dir
        self.skip_corrupt = skip_corrupt

    def source(self, split: Split) -> LabelledImages | None:
        root = {"train": self.train_dir, "val": self.val_dir, "test": self.test_dir, "ood": self.ood_dir}[split]
        if root is None:
            return None
        if split == "ood":
            paths = image_files(root)
            found = LabelledImages(paths, [-1] * len(paths), root)
        else:
            names, samples = scan_folder(root, None if split == "train" else self.classes)
            found = LabelledImages([path for path, _ in samples], [names[label] for _, label in samples], root)
        return readable_only(found) if self.skip_corrupt else found
