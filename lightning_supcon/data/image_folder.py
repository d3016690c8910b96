"""``ImageFolderDataModule``: ImageNet or any class-per-folder tree (``train_dir/<class>/<image>``).

Every image is converted to RGB (grayscale, RGBA, palette, CMYK). The recipe is SupCon's ImageNet one [0]: crop
scale ``(0.08, 1)`` and SimCLR's Gaussian blur [1]; evaluation resizes to ``image_size / 0.875`` (256 for 224)
and takes the central square. On the device path the loader workers decode and resize every image to that
fixed size (the training crops are drawn from it on the device).

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
- [1] Chen et al., SimCLR, ICML 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from lightning_supcon.data.base import MultiViewDataModule
from lightning_supcon.data.recipe import AugmentRecipe
from lightning_supcon.data.transforms import IMAGENET_MEAN, IMAGENET_STD, decode_steps

#: SupCon's ImageNet recipe [0]: crop scale (0.08, 1), flip, SimCLR's colour steps and Gaussian blur [1].
IMAGENET_RECIPE = AugmentRecipe(scale=(0.08, 1.0), blur_p=0.5)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def load_rgb(path: str) -> Image.Image:
    """Decode an image file as RGB; raises ``OSError`` naming the file when it cannot be read."""
    try:
        with Image.open(path) as file:
            image: Image.Image = file
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")  # palette transparency goes through RGBA, as PIL recommends
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as error:  # what PIL raises for unreadable or truncated data
        raise OSError(f"Cannot read image file {path!r}: {error}") from error


def is_readable(path: str) -> bool:
    """Whether PIL recognises the file and its structure checks pass (cheap: no full decode)."""
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:  # PIL raises many types here; any of them means "corrupt"
        return False


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
    found = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not found:
        raise ValueError(f"Expected one sub-folder per class in {str(root)!r}, but it has none.")
    classes = found if classes is None else classes
    index = {name: i for i, name in enumerate(classes)}
    samples: list[tuple[str, int]] = []
    for name in found:
        if name not in index:
            raise ValueError(f"Class folder {str(root / name)!r} is not a class of the training set ({len(index)}).")
        files = sorted(
            os.path.join(dirpath, file)
            for dirpath, _, filenames in os.walk(root / name, followlinks=True)
            for file in filenames
            if file.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files:
            raise ValueError(f"Expected images ({', '.join(IMAGE_EXTENSIONS)}) in {str(root / name)!r}, found none.")
        samples += [(path, index[name]) for path in files]
    return classes, samples


class ImageFileDataset(Dataset):
    """``(PIL RGB image, label)`` samples from ``(path, label)`` pairs."""

    def __init__(self, samples: list[tuple[str, int]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        return load_rgb(path), label


class ImageFolderDataModule(MultiViewDataModule):
    """A class-per-folder image tree such as ImageNet's; the classes are the sub-folders of ``train_dir``.

    Args:
        train_dir: Training images, ``train_dir/<class>/<image>``.
        val_dir: Validation images, the same layout; its classes must be among the training ones.
        test_dir: Optional test images; ``None`` tests on ``val_dir``.
        image_size: Side of the square training views and evaluation crops.
        skip_corrupt: Check every file when the data sets are built and leave out those PIL cannot read, with
            one warning giving their number (costs a pass over the file headers; a file whose header is fine but
            whose data is truncated still raises when loaded). ``False``: an unreadable image raises an
            ``OSError`` naming it when loaded.
        augment: The augmentation recipe; default :data:`IMAGENET_RECIPE`.
        **kwargs: The arguments of :class:`MultiViewDataModule`.

    Raises:
        FileNotFoundError: When a directory is missing (on first use).
        ValueError: For an empty tree, an empty class folder or a class missing from ``train_dir``, and if
            ``skip_corrupt`` leaves nothing.

    Example:
        >>> dm = ImageFolderDataModule("imagenet/train", "imagenet/val", batch_size=128, augment_on="device")
        >>> dm.image_size, dm.resize, dm.augment.scale, dm.augment.blur_p
        (224, 256, (0.08, 1.0), 0.5)
    """

    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(
        self,
        train_dir: str,
        val_dir: str,
        test_dir: str | None = None,
        image_size: int = 224,
        skip_corrupt: bool = False,
        augment: AugmentRecipe = IMAGENET_RECIPE,
        **kwargs: Any,
    ) -> None:
        super().__init__(augment=augment, **kwargs)
        self.train_dir = train_dir
        self.val_dir = val_dir
        self.test_dir = test_dir
        self.image_size = image_size
        self.skip_corrupt = skip_corrupt
        self.resize = round(image_size / 0.875)
        self._classes: list[str] | None = None

    @property
    def classes(self) -> list[str]:
        """The class names, sorted sub-folder names of ``train_dir``."""
        if self._classes is None:
            self._classes = scan_folder(self.train_dir)[0]
        return self._classes

    @property  # type: ignore[override]
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self.classes)

    def _folder(self, root: str) -> ImageFileDataset:
        _, samples = scan_folder(root, self.classes)
        if self.skip_corrupt:
            bad = [path for path, _ in samples if not is_readable(path)]
            if bad:
                rank_zero_warn(f"Skipped {len(bad)} unreadable image(s) in {root!r}, e.g. {bad[0]!r}.")
                skip = set(bad)
                samples = [sample for sample in samples if sample[0] not in skip]
            if not samples:
                raise ValueError(f"Expected readable images in {root!r}, but all {len(bad)} are unreadable.")
        return ImageFileDataset(samples)

    def train_dataset(self) -> ImageFileDataset:
        return self._folder(self.train_dir)

    def val_dataset(self) -> ImageFileDataset:
        return self._folder(self.val_dir)

    def test_dataset(self) -> ImageFileDataset | None:
        return None if self.test_dir is None else self._folder(self.test_dir)

    def decode_transform(self, train: bool) -> Callable[[Any], Tensor]:
        """Resize to ``image_size / 0.875`` and crop the centre: that square for training, ``image_size`` else."""
        return v2.Compose(decode_steps(self.resize if train else self.image_size, resize=self.resize))
