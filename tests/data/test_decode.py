"""load_image, the one decoder of every source: files written in their real formats (16-bit PNG and TIFF, 32-bit
integer and float TIFF, JPEG with an EXIF orientation, palette/LA/RGBA/CMYK), exact pixel values, and the same
upright image from the class-folder, CSV and Hugging Face sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from lightning_supcon.data import CsvDataModule, ImageFolderDataModule
from lightning_supcon.data.decode import load_image

SIXTEEN = [0, 257, 1000, 30000, 65535]
EIGHT = [round(v / 257) for v in SIXTEEN]  # [0, 1, 4, 117, 255]


def _pixels(image: Image.Image) -> list:
    return np.asarray(image).tolist()


class TestBitDepthIsScaledNotClipped:
    @pytest.mark.parametrize(
        ("file", "dtype"), [("g.png", "<u2"), ("g.tif", "<u2"), ("g.tif", ">u2"), ("i32.tif", "<i4")]
    )
    @pytest.mark.parametrize("mode", ["L", "RGB"])
    def test_sixteen_bit_values(self, tmp_path: Path, file: str, dtype: str, mode: str) -> None:
        """16-bit PNG ('I;16'), TIFF ('I;16', big-endian 'I;16B') and 32-bit integer TIFF ('I') holding 16-bit
        data: round(v / 257). PIL's convert gave [0, 255, 255, 255, 255]."""
        Image.fromarray(np.array([SIXTEEN], dtype=dtype)).save(tmp_path / file)
        opened = Image.open(tmp_path / file).mode
        assert opened in {"<u2": ("I;16",), ">u2": ("I;16B",), "<i4": ("I",)}[dtype]
        expected = [EIGHT] if mode == "L" else [[[v] * 3 for v in EIGHT]]
        assert _pixels(load_image(str(tmp_path / file), mode)) == expected

    def test_float_tiff_in_unit_range(self, tmp_path: Path) -> None:
        Image.fromarray(np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "f.tif")
        assert Image.open(tmp_path / "f.tif").mode == "F"
        assert _pixels(load_image(str(tmp_path / "f.tif"), "L")) == [[0, 64, 128, 255]]  # round(v * 255)

    @pytest.mark.parametrize(
        ("values", "match"),
        [
            (np.array([[0, 70000]], dtype=np.int32), r"32-bit integers span \[0, 70000\], but only \[0, 65535\]"),
            (np.array([[-5, 10]], dtype=np.int32), r"32-bit integers span \[-5, 10\]"),
            (
                np.array([[0.0, 1.5]], dtype=np.float32),
                r"floats span \[0, 1.5\], but float images must lie in \[0, 1\]",
            ),
            (np.array([[0.5, np.nan]], dtype=np.float32), r"floats span \[0.5, 0.5\] and NaN"),
        ],
    )
    def test_values_without_a_scale_are_refused_in_one_line(
        self, tmp_path: Path, values: np.ndarray, match: str
    ) -> None:
        Image.fromarray(values).save(tmp_path / "x.tif")
        with pytest.raises(OSError, match=match) as error:
            load_image(str(tmp_path / "x.tif"), "L")
        assert "x.tif" in str(error.value) and "\n" not in str(error.value)


class TestModes:
    """RGB (200, 10, 90): PIL's luma (299 R + 587 G + 114 B) / 1000 is 76; alpha is dropped; a 1-bit image is
    all ones (white)."""

    @pytest.mark.parametrize(
        ("file", "mode", "gray", "rgb"),
        [
            ("rgb.png", "RGB", 76, (200, 10, 90)),
            ("l.png", "L", 76, (76, 76, 76)),
            ("la.png", "LA", 76, (76, 76, 76)),
            ("rgba.png", "RGBA", 76, (200, 10, 90)),
            ("p.png", "P", 76, (200, 10, 90)),
            ("cmyk.tif", "CMYK", 76, (200, 10, 90)),
            ("one.png", "1", 255, (255, 255, 255)),
        ],
    )
    def test_each_mode_to_the_configured_channels(
        self, tmp_path: Path, file: str, mode: str, gray: int, rgb: tuple
    ) -> None:
        image = (
            Image.new("RGBA", (3, 2), (200, 10, 90, 128)).convert(mode) if mode != "1" else Image.new("1", (3, 2), 1)
        )
        image.save(tmp_path / file)
        assert Image.open(tmp_path / file).mode == mode
        assert _pixels(load_image(str(tmp_path / file), "L")) == [[gray] * 3] * 2
        assert _pixels(load_image(str(tmp_path / file), "RGB")) == [[list(rgb)] * 3] * 2

    def test_encoded_bytes_and_hf_values_decode_alike(self, tmp_path: Path) -> None:
        Image.fromarray(np.array([SIXTEEN], dtype="<u2")).save(tmp_path / "g.png")
        data = (tmp_path / "g.png").read_bytes()
        for value in (data, {"bytes": data, "path": None}, {"bytes": None, "path": str(tmp_path / "g.png")}):
            assert _pixels(load_image(value, "L")) == [EIGHT]  # type: ignore[arg-type]

    def test_unreadable_names_the_file(self, tmp_path: Path) -> None:
        (tmp_path / "bad.png").write_bytes(b"not an image")
        with pytest.raises(OSError, match=r"Cannot read image file '.*bad.png'"):
            load_image(str(tmp_path / "bad.png"))


def _sideways_jpeg(path: Path) -> Image.Image:
    """A 16 x 8 JPEG (wide) whose EXIF orientation 6 says: turn 90 degrees clockwise to view. Returns the upright
    image PIL's exif_transpose gives (8 x 16, tall)."""
    pixels = np.zeros((8, 16, 3), dtype=np.uint8)
    pixels[:, :8] = (255, 0, 0)  # left half red, right half blue
    pixels[:, 8:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, exif=exif, quality=100)
    upright = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    assert upright.size == (8, 16)
    return upright


class TestMetadataAppliedByEverySource:
    def test_exif_orientation_in_folder_csv_and_hf_sources(self, tmp_path: Path) -> None:
        """The same upright 8 x 16 image from every source (the class-folder and CSV sources decoded it sideways,
        16 x 8, the HF source upright)."""
        for name in ("a", "b"):
            (tmp_path / "tree" / name).mkdir(parents=True)
            upright = _sideways_jpeg(tmp_path / "tree" / name / "x.jpg")
        (tmp_path / "list.csv").write_text("tree/a/x.jpg,a\ntree/b/x.jpg,b\n")
        folder = ImageFolderDataModule(str(tmp_path / "tree"), str(tmp_path / "tree"), image_size=8)
        csv = CsvDataModule(str(tmp_path / "list.csv"), str(tmp_path / "list.csv"), image_size=8)
        decoded = [folder.dataset("val")[0][0], csv.dataset("val")[0][0]]
        datasets = pytest.importorskip("datasets")
        table = datasets.Dataset.from_dict({"image": [str(tmp_path / "tree/a/x.jpg")] * 2, "label": [0, 1]})
        table.cast_column("image", datasets.Image()).save_to_disk(str(tmp_path / "hf"))
        from lightning_supcon.data import HFDataModule

        hf = HFDataModule(str(tmp_path / "hf"), val_split="train", image_size=8)
        decoded.append(hf.dataset("val")[0][0])
        for image in decoded:
            assert image.size == (8, 16) and _pixels(image) == _pixels(upright)
