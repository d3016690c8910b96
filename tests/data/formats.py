"""Writers of small data sets in the real on-disk formats, for the tests of ``lightning_supcon.data``."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def _pickle(path: Path, entry: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def cifar_rows(n: int, seed: int) -> np.ndarray:
    """``n`` random images as CIFAR stores them: uint8 rows of 3072 = R plane, G plane, B plane (32 x 32 each)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 6) -> Path:
    """``root/cifar-10-batches-py`` with ``data_batch_1..5``, ``test_batch`` and ``batches.meta``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        n = n_test if name == "test_batch" else per_batch
        labels = [(i * per_batch + j) % 10 for j in range(n)]
        entry = {
            "batch_label": f"{name.replace('_', ' ')} of 5",
            "labels": labels,
            "data": cifar_rows(n, seed=i),
            "filenames": [f"img_{i}_{j}.png" for j in range(n)],
        }
        _pickle(folder / name, entry)
    meta = {"num_cases_per_batch": per_batch, "label_names": [f"class{k}" for k in range(10)], "num_vis": 3072}
    _pickle(folder / "batches.meta", meta)
    return folder


def write_cifar100(root: Path, n_train: int = 12, n_test: int = 5) -> Path:
    """``root/cifar-100-python`` with ``train``, ``test`` and ``meta``."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for seed, (name, n) in enumerate((("train", n_train), ("test", n_test))):
        fine = [(7 * j) % 100 for j in range(n)]
        entry = {
            "filenames": [f"img_{j}.png" for j in range(n)],
            "batch_label": f"{name}ing batch 1 of 1",
            "fine_labels": fine,
            "coarse_labels": [label // 5 for label in fine],
            "data": cifar_rows(n, seed=seed + 10),
        }
        _pickle(folder / name, entry)
    _pickle(folder / "meta", {"fine_label_names": [f"f{k}" for k in range(100)], "coarse_label_names": []})
    return folder


def _image(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    rgb = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    if mode == "P":
        image = image.quantize(colors=16)
        image.info["transparency"] = 0
        return image
    return image.convert(mode)


def write_image_tree(root: Path, classes: dict[str, list[str]], size: tuple[int, int] = (20, 14)) -> Path:
    """``root/<class>/<file>`` images.

    A file spec is ``"<name>.<ext>:<PIL mode>"``, ``"<name>:corrupt"`` (garbage bytes) or ``"<name>:text"``.
    """
    root.mkdir(parents=True, exist_ok=True)
    seed = 0
    for name, files in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for spec in files:
            file, mode = spec.split(":")
            seed += 1
            if mode == "corrupt":
                (root / name / file).write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
            elif mode == "text":
                (root / name / file).write_text("not an image, ignored")
            else:
                _image(mode, size, seed).save(root / name / file)
    return root


def digits_split(seed: int = 0, val_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """The train and val indices of ``DigitsDataModule``'s split (stratified, seeded) of scikit-learn's digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    train, val = train_test_split(np.arange(len(target)), test_size=val_fraction, stratify=target, random_state=seed)
    return train, val


def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return np.round(data.images * 255 / 16).astype(np.uint8), data.target  # (1797, 8, 8) 0..255, (1797,)


def write_digits_tree(root: Path) -> tuple[Path, Path]:
    """The 1,797 digits as 8x8 grayscale PNGs ``root/{train,val}/<digit>/<index>.png``, split as ``DigitsDataModule``
    splits them; returns ``(train_dir, val_dir)``."""
    images, target = _digit_images()
    for split, indices in zip(("train", "val"), digits_split(), strict=True):
        for i in indices:
            folder = root / split / str(target[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], "L").save(folder / f"{i:04d}.png")
    return root / "train", root / "val"


def write_digits_list(root: Path) -> Path:
    """The 1,797 digits as 8x8 grayscale PNGs ``root/images/<index>.png`` and one list ``root/digits.csv`` of
    ``path,label`` rows (a header, integer labels) in scikit-learn's order; returns the list's path."""
    images, target = _digit_images()
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = ["path,label"]
    for i, (image, label) in enumerate(zip(images, target, strict=True)):
        Image.fromarray(image, "L").save(root / "images" / f"{i:04d}.png")
        rows.append(f"images/{i:04d}.png,{label}")
    (root / "digits.csv").write_text("\n".join(rows) + "\n")
    return root / "digits.csv"
