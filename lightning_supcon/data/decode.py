"""``load_image``: the one image decoder of every source (class folders, CSV lists, Hugging Face tables).

A file path, encoded bytes or a PIL image becomes a PIL image in ``"L"`` (grayscale) or ``"RGB"``, always by the
same rules:

- the EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), so a phone's JPEG stored sideways with
  orientation 6 is upright whatever the source;
- 16-bit grayscale (``"I;16"``, ``"I;16L"``, ``"I;16B"``, ``"I;16N"``: PNG, TIFF) is scaled to 8 bits by
  ``round(v / 257)``, which maps ``[0, 65535]`` onto ``[0, 255]`` (PIL's own ``convert`` clips every value above
  255 to white);
- 32-bit integers (``"I"``, e.g. TIFF) in ``[0, 65535]`` are read as 16-bit data, by the same rule (PIL gives 16-bit
  data this mode); other values are refused in one line: a 32-bit range has no agreed black and white;
- 32-bit floats (``"F"``, TIFF) are taken as ``[0, 1]``, torchvision's convention for float images, and scaled
  by ``round(v * 255)``; NaN or values outside ``[0, 1]`` are refused in one line rather than clipped;
- palette (with transparency through RGBA, as PIL recommends), LA, RGBA, CMYK and 1-bit images are converted by
  PIL's ``convert``; grayscale to RGB repeats the channel, RGB to grayscale is ITU-R 601-2 luma.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageOps

#: The modes PIL opens 16-bit grayscale files in (PNG, TIFF; byte order by suffix).
SIXTEEN_BIT_MODES: tuple[str, ...] = ("I;16", "I;16L", "I;16B", "I;16N")
_EXIF_ORIENTATION = 0x0112


def load_image(image: str | bytes | Image.Image | dict[str, Any], mode: str = "RGB") -> Image.Image:
    """A PIL image in ``mode`` (``"L"`` or ``"RGB"``) by the rules of this module.

    Args:
        image: A file path, encoded bytes, a PIL image of any mode, or a Hugging Face ``Image(decode=False)``
            value (``{"bytes": ..., "path": ...}``).
        mode: ``"L"`` or ``"RGB"``.

    Returns:
        The decoded image, upright, in ``mode``.

    Raises:
        OSError: Naming the file, when it cannot be read, or holds 32-bit integers outside ``[0, 65535]`` or
            floats outside ``[0, 1]``.

    Example:
        >>> sixteen = Image.fromarray(np.array([[0, 257, 1000, 30000, 65535]], dtype=np.uint16))
        >>> np.asarray(load_image(sixteen, "L")).tolist()
        [[0, 1, 4, 117, 255]]
    """
    name = _name(image)
    try:
        if isinstance(image, dict):
            image = image["bytes"] if image.get("bytes") is not None else image["path"]
        if isinstance(image, bytes):
            image = io.BytesIO(image)  # type: ignore[assignment]
        if not isinstance(image, Image.Image):
            with Image.open(image) as file:  # type: ignore[arg-type]
                return _convert(file, mode, name)
        return _convert(image, mode, name)
    except (OSError, ValueError, SyntaxError) as error:  # what PIL raises for unreadable or truncated data
        if isinstance(error, UnreadableImage):
            raise
        raise UnreadableImage(f"Cannot read image file {name}: {error}") from None


class UnreadableImage(OSError):
    """An image that cannot be decoded, or whose values have no defined 8-bit scale; the message names it."""


class UnscaledImage(UnreadableImage):
    """An image PIL reads whose values have no defined 8-bit scale (32-bit integers beyond 16 bits, floats outside
    [0, 1]): ``skip_corrupt``, which leaves out what PIL cannot open, does not leave it out."""


def _convert(image: Image.Image, mode: str, name: str) -> Image.Image:
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        image = Image.fromarray(to_uint8(np.asarray(image), image.mode, name))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert(mode)


def to_uint8(values: np.ndarray, mode: str, name: str = "image") -> np.ndarray:
    """The 8-bit values of a 16-bit, 32-bit integer or float image, by the rules of this module.

    Args:
        values: The pixels, ``(H, W)``, as ``np.asarray`` gives them for ``mode``.
        mode: The PIL mode they come from: one of :data:`SIXTEEN_BIT_MODES`, ``"I"`` or ``"F"``.
        name: The file, for the error message.

    Returns:
        uint8 ``(H, W)``.

    Raises:
        OSError: For ``"I"`` values outside ``[0, 65535]`` or ``"F"`` values outside ``[0, 1]`` (or NaN).

    Example:
        >>> to_uint8(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F").tolist()
        [[0, 128, 255]]
    """
    wide = values.astype(np.float64)
    if mode == "F":
        if not np.all((wide >= 0.0) & (wide <= 1.0)):  # NaN fails both comparisons
            nan = " and NaN" if np.isnan(wide).any() else ""
            raise UnscaledImage(
                f"Cannot read image file {name}: its floats span [{np.nanmin(wide):g}, {np.nanmax(wide):g}]{nan}, but "
                "float images must lie in [0, 1]; rescale it, or save it as 8- or 16-bit."
            )
        return np.round(wide * 255.0).astype(np.uint8)
    if wide.size and (wide.min() < 0 or wide.max() > 65535):
        raise UnscaledImage(
            f"Cannot read image file {name}: its 32-bit integers span [{wide.min():g}, {wide.max():g}], but only "
            "[0, 65535] (16-bit data) has a defined scale; save it as 8- or 16-bit, or as floats in [0, 1]."
        )
    return np.round(wide / 257.0).astype(np.uint8)


def _name(image: object) -> str:
    if isinstance(image, dict):
        return repr(image.get("path") or "<encoded bytes>")
    if isinstance(image, bytes):
        return "'<encoded bytes>'"
    if isinstance(image, Image.Image):
        return repr(getattr(image, "filename", "") or f"<PIL {image.mode} image>")
    return repr(image)
