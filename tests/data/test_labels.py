"""Labels of image lists and tables: parsing, class names, encoding against the training classes, the split."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from lightning_supcon.data.labels import class_names, encode_labels, parse_labels, stratified_split


class TestParse:
    @pytest.mark.parametrize(
        ("cells", "expected"),
        [
            (["1", "0", " 12 "], [1, 0, 12]),
            (["-1", "+2"], [-1, 2]),
            (["cat", "1"], ["cat", "1"]),
            (["1.5", "2"], ["1.5", "2"]),
            ([" dog "], ["dog"]),
        ],
    )
    def test_ints_only_when_all_are(self, cells: list[str], expected: list) -> None:
        assert parse_labels(cells) == expected


class TestClassNames:
    def test_names_sorted_and_indices_dense(self) -> None:
        assert class_names(["b", "a", "b", "c"]) == ["a", "b", "c"]
        assert class_names([3, 1]) == ["0", "1", "2", "3"]  # an index is its own class, absent ones included

    @pytest.mark.parametrize(
        ("labels", "match"),
        [([], "at least one training label"), ([0, -1], "indices >= 0, but got -1"), ([0, "a"], "all class names")],
    )
    def test_errors(self, labels: list, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            class_names(labels)


class TestEncode:
    def test_names_and_indices(self) -> None:
        assert encode_labels(["c", "a"], ["a", "b", "c"], "x") == [2, 0]
        assert encode_labels([2, 0], ["a", "b", "c"], "x") == [2, 0]
        assert encode_labels(["2"], ["0", "1", "2"], "x") == [2]  # a name of an integer class

    @pytest.mark.parametrize("label", ["fox", 3, -1])
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
