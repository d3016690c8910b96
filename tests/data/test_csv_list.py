"""CsvDataModule and read_image_list: CSV/TSV lists of ``path,label`` rows, headers, label kinds, bad lists."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_supcon.data import CsvDataModule, read_image_list
from tests.data.formats import digits_split, write_digits_list, write_image_tree


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """``tmp_path/img/{cat,dog}/...``: 4 cats and 4 dogs as small PNGs."""
    cats, dogs = [f"c{i}.png:RGB" for i in range(4)], [f"d{i}.png:L" for i in range(4)]
    write_image_tree(tmp_path / "img", {"cat": cats, "dog": dogs})
    return tmp_path


def _rows(kind: str) -> list[tuple[str, str]]:
    names = [(f"img/cat/c{i}.png", "cat") for i in range(4)] + [(f"img/dog/d{i}.png", "dog") for i in range(4)]
    return names if kind == "names" else [(path, str(int(label == "dog"))) for path, label in names]


def _write(path: Path, rows: list[tuple[str, str]], sep: str = ",", header: str | None = "path,label") -> str:
    lines = ([header.replace(",", sep)] if header else []) + [sep.join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


class TestRead:
    @pytest.mark.parametrize("kind", ["names", "ints"])
    @pytest.mark.parametrize(("suffix", "sep"), [(".csv", ","), (".tsv", "\t"), (".txt", ";")])
    @pytest.mark.parametrize("header", ["path,label", None])
    def test_formats(self, images: Path, kind: str, suffix: str, sep: str, header: str | None) -> None:
        listed = _write(images / f"train{suffix}", _rows(kind), sep, header)
        found = read_image_list(listed, delimiter=";" if sep == ";" else None)
        assert [Path(p).relative_to(images).as_posix() for p in found.images] == [p for p, _ in _rows(kind)]
        expected = ["cat"] * 4 + ["dog"] * 4 if kind == "names" else ["0"] * 4 + ["1"] * 4  # typed by the module
        assert list(found.labels) == expected and found.where == listed

    @pytest.mark.parametrize("typed", ["\\t", "tab"])
    def test_a_tab_typed_in_a_shell(self, images: Path, typed: str) -> None:
        """`--data.delimiter '\\t'` reaches us as backslash + t: it means a tab."""
        listed = _write(images / "train.txt", _rows("ints"), "\t")
        assert len(read_image_list(listed, delimiter=typed).images) == 8

    def test_named_columns_in_any_order_and_root(self, images: Path, tmp_path: Path) -> None:
        lists = tmp_path / "lists"
        lists.mkdir()
        rows = [(label, "x", path) for path, label in _rows("names")]
        listed = _write(lists / "l.csv", rows, header="class,extra,file")  # type: ignore[arg-type]
        found = read_image_list(listed, root=str(images), path_column="file", label_column="class")
        assert Path(found.images[0]) == images / "img/cat/c0.png" and found.labels[-1] == "dog"

    def test_missing_images_named_with_rows_and_header_hint(self, images: Path) -> None:
        listed = _write(images / "l.csv", _rows("names"), header="file,class")
        with pytest.raises(FileNotFoundError, match=r"1 image\(s\) listed in .* row 1: '.*file'.*set `header: true`"):
            read_image_list(listed)
        listed = _write(images / "m.csv", [*_rows("names"), ("img/cat/nope.png", "cat")])
        with pytest.raises(FileNotFoundError, match=r"row 10: '.*nope.png'\.$"):
            read_image_list(listed)

    @pytest.mark.parametrize(
        ("text", "kwargs", "match"),
        [
            ("", {}, "Expected `path,label` rows in .* but it is empty"),
            ("file,label\na.png,1\n", {"header": True}, r"columns \['path'\] in the header .* has \['file', 'label'\]"),
            ("img/cat/c0.png\n", {}, r"Expected >= 2 columns separated by ',' in row 1 of"),
            ("a.png;;1\n", {"delimiter": ";;"}, r"`delimiter` to be one character .* but got ';;'"),
            ("path,label\n", {}, r"Expected rows below the header of .*bad.csv', but it has only the header"),
            ("path\n", {"label_column": None}, r"rows below the header of .*bad.csv', but it has only the header"),
        ],
    )
    def test_malformed(self, images: Path, text: str, kwargs: dict, match: str) -> None:
        (images / "bad.csv").write_text(text)
        with pytest.raises(ValueError, match=match):
            read_image_list(str(images / "bad.csv"), **kwargs)

    def test_missing_list(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match=r"Expected an image list file .* is not a file"):
            read_image_list(str(tmp_path / "none.csv"))


class TestDataModule:
    def test_lists_and_classes(self, images: Path) -> None:
        train = _write(images / "train.csv", _rows("names"))
        val = _write(images / "val.csv", [("img/dog/d0.png", "dog")], header=None)
        dm = CsvDataModule(train, val, image_size=8, batch_size=4, channels=1, mean="auto", std="auto")
        assert (dm.classes, dm.num_classes, dm.in_channels) == (["cat", "dog"], 2, 1)
        views, labels = next(iter(dm.train_dataloader()))
        assert views.shape == (4, 2, 1, 8, 8) and set(labels.tolist()) <= {0, 1}
        assert next(iter(dm.val_dataloader()))[1].tolist() == [1]  # type: ignore[call-overload]
        assert len(dm.test_dataloader().dataset) == 1  # type: ignore[arg-type]

    def test_test_list_label_not_a_training_class(self, images: Path) -> None:
        train = _write(images / "train.csv", _rows("ints"))
        test = _write(images / "test.csv", [("img/cat/c0.png", "7")])
        dm = CsvDataModule(train, test_list=test, val_fraction=0.25)
        with pytest.raises(ValueError, match=r"Label '7' in .*test.csv is not a class of the training set \(2 classes"):
            dm.test_dataloader()

    def test_seeded_split_is_digits_split(self, tmp_path: Path) -> None:
        """One list, no validation list: the held-out 20% are DigitsDataModule's validation images."""
        dm = CsvDataModule(str(write_digits_list(tmp_path)), val_fraction=0.2, split_seed=0)
        train, val = digits_split()
        assert (dm.dataset("train").indices, dm.dataset("val").indices) == (train.tolist(), val.tolist())

    @pytest.mark.parametrize(
        ("header", "rows"),
        [
            (None, ["img/cat/c0.png", "img/dog/d1.png"]),  # paths only
            ("path,label", ["img/cat/c0.png,", "img/dog/d1.png,zebra"]),  # blank and unknown labels: not read
            ("label,path", [",img/cat/c0.png", "?,img/dog/d1.png"]),  # named columns in another order
        ],
    )
    def test_ood_list_reads_paths_only(self, images: Path, header: str | None, rows: list[str]) -> None:
        train = _write(images / "train.csv", _rows("names"))
        (images / "ood.txt").write_text("\n".join(([header] if header else []) + rows) + "\n")
        dm = CsvDataModule(train, ood_list=str(images / "ood.txt"), image_size=8, predict_split="ood")
        loader = dm.ood_dataloader()
        assert loader is not None
        ood_images, labels = next(iter(loader))
        assert ood_images.shape == (2, 3, 8, 8) and labels.tolist() == [-1, -1]
        data = dm.dataset("ood")
        assert data is not None and [Path(p).name for p in data.images] == ["c0.png", "d1.png"]
        assert dm.classes == ["cat", "dog"] and CsvDataModule(train).ood_dataloader() is None

    def test_skip_corrupt(self, images: Path) -> None:
        write_image_tree(images / "img", {"cat": ["broken.png:corrupt"]})
        train = _write(images / "train.csv", [*_rows("names"), ("img/cat/broken.png", "cat")])
        dm = CsvDataModule(train, train, skip_corrupt=True)
        with pytest.warns(UserWarning, match=r"Skipped 1 unreadable image\(s\) in '.*train.csv'"):
            assert len(dm.dataset("train")) == 8
        with pytest.raises(OSError, match=r"Cannot read image file '.*broken.png'"):
            torch.stack([image for image, _ in CsvDataModule(train, train, image_size=8).train_eval_dataloader()])
