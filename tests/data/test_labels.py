"""Labels of image lists and tables: parsing, class names, encoding against the training classes, the split."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sklearn.model_selection import train_test_split

from lightning_supcon.data import (
    CIFAR10DataModule,
    CsvDataModule,
    DigitsDataModule,
    HFDataModule,
    ImageFolderDataModule,
)
from lightning_supcon.data.digits import load_digit_images
from lightning_supcon.data.labels import LabelledDataset, class_names, encode_labels, stratified_split
from tests.data.formats import write_cifar10, write_image_tree


class TestClassNames:
    def test_names_sorted_and_indices_dense(self) -> None:
        assert class_names(["b", "a", "b", "c"]) == ["a", "b", "c"]
        assert class_names([3, 1]) == ["0", "1", "2", "3"]  # an index is its own class, absent ones included

    @pytest.mark.parametrize(
        ("labels", "match"),
        [
            ([], "at least one training label"),
            ([0, -2], r"indices >= 0 \(or -1 for unknown\), but got -2"),
            ([-1], "other than -1"),
            ([0, "a"], "all class names"),
        ],
    )
    def test_errors(self, labels: list, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            class_names(labels)


class TestEncode:
    def test_names_and_indices(self) -> None:
        assert encode_labels(["c", "a"], ["a", "b", "c"], "x") == [2, 0]
        assert encode_labels([2, 0], ["a", "b", "c"], "x") == [2, 0]
        assert encode_labels(["2"], ["0", "1", "2"], "x") == [2]  # a name of an integer class

    @pytest.mark.parametrize("label", ["fox", 3, -2])
    def test_unknown_label_names_it_and_where(self, label: object) -> None:
        with pytest.raises(ValueError, match=rf"Label {label!r} in val.csv is not a class of the training set \(3"):
            encode_labels([label], ["a", "b", "c"], "val.csv")  # type: ignore[list-item]


class TestStratifiedSplit:
    def test_is_digits_split(self) -> None:
        """The same indices as scikit-learn's train_test_split, which DigitsDataModule uses."""
        labels = list(np.random.default_rng(0).integers(0, 5, 200))
        train, val = stratified_split(labels, 0.2, seed=3)
        ref = train_test_split(np.arange(200), test_size=0.2, stratify=labels, random_state=3)
        assert (train, val) == (ref[0].tolist(), ref[1].tolist())

    def test_stratified_seeded_disjoint(self) -> None:
        labels = [0] * 50 + [1] * 30 + [2] * 20
        train, val = stratified_split(labels, 0.1, seed=0)
        assert sorted(train + val) == list(range(100))
        assert Counter(labels[i] for i in val) == {0: 5, 1: 3, 2: 2}
        assert stratified_split(labels, 0.1, seed=0) == (train, val) != stratified_split(labels, 0.1, seed=1)

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match=r"`val_fraction` to be in \(0, 1\), but got 1.0"):
            stratified_split([0, 1], 1.0, seed=0)
        with pytest.raises(ValueError, match=r"Cannot hold out a stratified validation set.*: give a validation split"):
            stratified_split([0, 0, 0, 1], 0.25, seed=0)


# ---- labels carried with the samples: every label-reading feature on every source, checked against the files ----
def _key(image: Any) -> bytes:
    return np.asarray(image).tobytes()


def _image_files(root: Path) -> tuple[Path, dict[bytes, str]]:
    """3 classes of 12 distinct random RGB PNGs ``root/<class>/<i>.png``, and each image's class read from its file."""
    names = ("ant", "bee", "cow")
    tree = write_image_tree(root, {name: [f"{i}.png:RGB" for i in range(12)] for name in names})
    truth = {_key(Image.open(path).convert("RGB")): path.parent.name for path in sorted(tree.glob("*/*.png"))}
    assert len(truth) == 36
    return tree, truth


def _folders(tmp_path: Path, held_out: bool, **kwargs: Any) -> tuple[Any, dict[bytes, str]]:
    tree, truth = _image_files(tmp_path / "train")
    val = None if held_out else str(write_image_tree(tmp_path / "val", {"ant": ["v.png:RGB"], "cow": ["w.png:RGB"]}))
    return ImageFolderDataModule(str(tree), val, image_size=8, val_fraction=0.25, **kwargs), truth


def _csv(tmp_path: Path, held_out: bool, **kwargs: Any) -> tuple[Any, dict[bytes, str]]:
    tree, truth = _image_files(tmp_path / "images")
    files = sorted(tree.glob("*/*.png"), key=lambda p: (p.stem, p.parent.name))  # classes interleaved
    (tmp_path / "train.csv").write_text("".join(f"{p.relative_to(tmp_path)},{p.parent.name}\n" for p in files))
    val = None
    if not held_out:
        (tmp_path / "val.csv").write_text(f"{files[0].relative_to(tmp_path)},{files[0].parent.name}\n")
        val = str(tmp_path / "val.csv")
    return CsvDataModule(str(tmp_path / "train.csv"), val, image_size=8, val_fraction=0.25, **kwargs), truth


def _digits(tmp_path: Path, held_out: bool, **kwargs: Any) -> tuple[Any, dict[bytes, str]]:
    images, labels = load_digit_images(8)
    truth = {_key(image): str(int(label)) for image, label in zip(images, labels, strict=True)}
    return DigitsDataModule(image_size=8, **kwargs), truth


def _cifar(tmp_path: Path, held_out: bool, **kwargs: Any) -> tuple[Any, dict[bytes, str]]:
    folder = write_cifar10(tmp_path, per_batch=12, n_test=6)
    truth = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        with open(folder / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        rows = np.asarray(entry["data"]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        truth |= {_key(row): f"class{label}" for row, label in zip(rows, entry["labels"], strict=True)}
    return CIFAR10DataModule(str(tmp_path), **kwargs), truth


def _hf(tmp_path: Path, held_out: bool, **kwargs: Any) -> tuple[Any, dict[bytes, str]]:
    """The class-folder images as a ``datasets`` table saved to disk, a string label column."""
    datasets = pytest.importorskip("datasets")
    tree, truth = _image_files(tmp_path / "images")
    files = sorted(tree.glob("*/*.png"), key=lambda p: (p.stem, p.parent.name))
    table = datasets.Dataset.from_dict(
        {"image": [str(p) for p in files], "label": [p.parent.name for p in files]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")}),
    )
    table.save_to_disk(str(tmp_path / "table"))
    return HFDataModule(str(tmp_path / "table"), image_size=8, val_fraction=0.25, **kwargs), truth


SOURCES = {
    "hf_held_out": (_hf, True),
    "folders_held_out": (_folders, True),
    "folders_val_dir": (_folders, False),
    "csv_held_out": (_csv, True),
    "csv_val_list": (_csv, False),
    "digits": (_digits, True),
    "cifar_pickle": (_cifar, False),
}


def _true_labels(dm: Any, truth: dict[bytes, str]) -> tuple[np.ndarray, np.ndarray]:
    """The labels the training set carries, and those its files give, sample by sample."""
    data = dm._present("train")
    true = [dm.classes.index(truth[_key(data[i][0])]) for i in range(len(data))]
    return data.labels, np.asarray(true)


@pytest.mark.parametrize("source", SOURCES)
class TestLabelsCarriedWithSamples:
    """Issue 23 item 1: with a held-out validation split, ``ImageDataset.labels`` were read beside its ``indices``."""

    def _make(self, tmp_path: Path, source: str, **kwargs: Any) -> tuple[Any, dict[bytes, str]]:
        make, held_out = SOURCES[source]
        return make(tmp_path, held_out, batch_size=6, **kwargs)

    def test_labels_carried_with_samples_label_fraction(self, tmp_path: Path, source: str) -> None:
        dm, truth = self._make(tmp_path, source, label_fraction=0.5, subset_seed=3)
        full, _ = self._make(tmp_path / "again", source)
        labels, true = _true_labels(dm, truth)
        assert np.array_equal(labels, true)  # each sample trains with its own file's label
        _, full_true = _true_labels(full, truth)
        expected = [min(n, max(1, int(np.floor(0.5 * n + 0.5)))) for n in np.bincount(full_true)]
        assert np.bincount(true, minlength=len(expected)).tolist() == expected  # stratified by the true labels

    def test_labels_carried_with_samples_unlabelled_unknown(self, tmp_path: Path, source: str) -> None:
        dm, truth = self._make(tmp_path, source, label_fraction=0.5, subset_seed=3, unlabelled="unknown")
        labels, true = _true_labels(dm, truth)
        known = labels >= 0
        assert len(labels) == len(dm.dataset("train")) and np.array_equal(labels[known], true[known])
        expected = [min(n, max(1, int(np.floor(0.5 * n + 0.5)))) for n in np.bincount(true)]
        assert np.bincount(true[known], minlength=len(expected)).tolist() == expected
        assert [dm._present("train")[i][1] for i in range(len(labels))] == labels.tolist()

    def test_labels_carried_with_samples_sampler_balanced(self, tmp_path: Path, source: str) -> None:
        dm, truth = self._make(tmp_path, source, sampler="balanced", samples_per_class=3)
        _, true = _true_labels(dm, truth)
        sampler = dm.train_dataloader().sampler
        batches = true[np.asarray(sampler.indices())].reshape(-1, 6)  # the files' labels of each drawn batch
        assert len(batches) >= 1
        assert all(sorted(np.unique(b, return_counts=True)[1].tolist()) == [3, 3] for b in batches)


# ---- CSV labels: blank, unknown (-1), and their type decided once from the training list ----
def _list_module(tmp_path: Path, train: list[str], val: list[str] | None = None, **kwargs: Any) -> CsvDataModule:
    """A CSV data module over one tiny image per row, the labels as given (a header row)."""
    write_image_tree(tmp_path / "img", {"x": [f"{i}.png:RGB" for i in range(len(train) + len(val or []))]})

    def write(name: str, labels: list[str], start: int) -> str:
        rows = "".join(f"img/x/{start + i}.png,{label}\n" for i, label in enumerate(labels))
        (tmp_path / name).write_text("path,label\n" + rows)
        return str(tmp_path / name)

    val_list = write("val.csv", val, len(train)) if val is not None else None
    return CsvDataModule(write("train.csv", train, 0), val_list, image_size=8, batch_size=2, **kwargs)


class TestLabelsAreIntegers:
    @pytest.mark.parametrize(("labels", "bad"), [([0.7, 3.9], "0.7"), ([0, 1.5], "1.5"), (["cat", "dog"], "'cat'")])
    def test_a_cast_that_would_change_a_label_is_refused(self, labels: list, bad: str) -> None:
        """np.asarray(..., dtype=int64) truncates 0.7 to 0 and 3.9 to 3, in silence."""
        with pytest.raises(ValueError, match=f"but got {bad} .*: give each class name its index"):
            LabelledDataset(["a", "b"], labels)

    def test_whole_floats_bools_and_multi_hot_rows_are_kept(self) -> None:
        assert LabelledDataset(["a", "b"], [2.0, -1.0]).labels.tolist() == [2, -1]
        assert LabelledDataset(["a"], [[True, False]]).labels.tolist() == [[1, 0]]


class TestBlankLabel:
    def test_blank_label_refused_naming_its_row(self, tmp_path: Path) -> None:
        """Issue 23 item 2: a blank label cell became a class of its own ('')."""
        dm = _list_module(tmp_path, ["0", "1", " ", "1"], ["0", "1"])
        with pytest.raises(
            ValueError, match=r"a label in row 4 of .*train.csv'?, but it is blank: .* -1 for an unknown"
        ):
            _ = dm.num_classes

    def test_blank_label_minus_one_is_unknown(self, tmp_path: Path) -> None:
        """-1 means "unknown class" in a list as everywhere else: partially labelled data without code."""
        dm = _list_module(tmp_path, ["0", "-1", "1", "1", "-1", "0"], ["0", "-1"])
        assert dm.classes == ["0", "1"] and dm.dataset("train").labels.tolist() == [0, -1, 1, 1, -1, 0]
        assert dm.dataset("val").labels.tolist() == [0, -1]
        named = _list_module(tmp_path / "named", ["cat", "-1", "dog"], ["dog"])
        assert named.classes == ["cat", "dog"] and named.dataset("train").labels.tolist() == [0, -1, 1]


class TestLabelTypeDecidedOnce:
    def test_label_type_decided_once_names_in_training(self, tmp_path: Path) -> None:
        """Issue 23 item 3: train ``1, 2, 10, other`` are names; val ``1, 2`` became the classes '10' and '2'."""
        dm = _list_module(tmp_path, ["1", "2", "10", "other"], ["1", "2", "10"])
        assert dm.classes == ["1", "10", "2", "other"]
        assert [dm.classes[i] for i in dm.dataset("val").labels] == ["1", "2", "10"]

    def test_label_type_decided_once_indices_in_training(self, tmp_path: Path) -> None:
        dm = _list_module(tmp_path, ["0", "1", "2"], ["+2", " 1"])
        assert dm.classes == ["0", "1", "2"] and dm.dataset("val").labels.tolist() == [2, 1]
        with pytest.raises(ValueError, match=r"Label 'cat' in .*val.csv is not a class of the training set \(3"):
            _ = _list_module(tmp_path / "b", ["0", "1", "2"], ["cat"]).dataset("val")

    def test_label_type_decided_once_folder_names_stay_names(self, tmp_path: Path) -> None:
        tree = write_image_tree(tmp_path / "t", {c: [f"{i}.png:RGB" for i in range(4)] for c in ("1", "2", "10")})
        assert ImageFolderDataModule(str(tree), image_size=8, val_fraction=0.25).classes == ["1", "10", "2"]
