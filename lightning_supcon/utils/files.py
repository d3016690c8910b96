"""Reading a file the user names: one safe reader of ``torch.save`` and safetensors files, one error type.

Every place of the package that reads a file a user names (a checkpoint to resume or evaluate, an encoder to load
or export, a weights file for a backbone, an embeddings file) reads it here, so each gets the same checks and the
same one-line messages:

- the file exists and is not empty;
- a ``torch.save`` file is a complete zip archive holding ``data.pkl`` (``zipfile``'s CRC check finds truncated and
  damaged files before ``torch.load`` fails inside its unpickler with a long traceback);
- it is read with ``torch.load(weights_only=True)``, which restores tensors and plain values only and runs no code
  from the file; a file that needs full unpickling is refused unless ``trust=True`` (PyTorch's own rule since 2.6);
- safetensors files are read with ``safetensors`` (no code, no pickle) with their string metadata.

Every failure is a :class:`FileReadError` (a ``ValueError``; a missing file is also a ``FileNotFoundError``) whose
message names the file and what is wrong with it in one line.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "FileReadError",
    "MissingFileError",
    "check_torch_archive",
    "first_line",
    "read_safetensors",
    "read_torch_file",
]


class FileReadError(ValueError):
    """A file the user named cannot be read as what it should be; the message names it and why, in one line."""


class MissingFileError(FileReadError, FileNotFoundError):
    """The file the user named does not exist (or is not a file)."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (at most ``limit`` characters), or its type's name if it has none.

    Example:
        >>> first_line(RuntimeError("Error(s) in loading state_dict:\\n  Missing key(s) ..."))
        'Error(s) in loading state_dict:'
        >>> first_line(KeyError())
        'KeyError'
    """
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what.capitalize()} {str(path)!r} does not exist (or is not a file).")
    if path.stat().st_size == 0:
        raise FileReadError(f"Cannot read {what} {str(path)!r}: the file is empty.")
    return path


def check_torch_archive(path: str | Path, what: str = "checkpoint") -> Path:
    """``path`` if it is a complete ``torch.save`` archive (a zip holding ``data.pkl``, every member's CRC right).

    Args:
        path: The file (a link is followed).
        what: What the file should be, for the message (``"checkpoint"``, ``"weights file"``, ...).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        MissingFileError: If there is no such file.
        FileReadError: If it is empty, truncated, damaged or not written by ``torch.save``.

    Example:
        >>> import tempfile
        >>> file = Path(tempfile.mkdtemp()) / "x.ckpt"
        >>> torch.save({"step": 1}, file)
        >>> check_torch_archive(file).name
        'x.ckpt'
        >>> _ = file.write_bytes(file.read_bytes()[:40])
        >>> check_torch_archive(file)
        Traceback (most recent call last):
        ...
        lightning_supcon.utils.files.FileReadError: Cannot read checkpoint '...x.ckpt': truncated or not a ...
    """
    path = _existing(path, what)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        raise FileReadError(f"Cannot read {what} {str(path)!r}: truncated or not a torch.save file.") from None
    if damaged is not None:
        raise FileReadError(f"Cannot read {what} {str(path)!r}: damaged data ({damaged}).")
    if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        raise FileReadError(f"Cannot read {what} {str(path)!r}: a zip file, but not one written by torch.save.")
    return path


def _unsafe_global(error: BaseException) -> str | None:
    """The global a weights-only load refused (``builtins.open``), or ``None`` when it failed for another reason."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    return match.group(1) if match else None


TRUST_OPT_IN = "`trust_checkpoint=True` (`trust_checkpoint: true` in a config)"


def read_torch_file(
    path: str | Path, trust: bool = False, what: str = "checkpoint", opt_in: str | None = TRUST_OPT_IN
) -> Any:
    """What a ``torch.save`` file the user named holds, on the CPU, read with ``weights_only=True`` unless trusted.

    Args:
        path: The file.
        trust: Unpickle the file in full (``weights_only=False``), which can run code stored in it. Only for files
            you trust that need it (``trust_checkpoint: true`` in a config).
        what: What the file should be, for the messages.
        opt_in: How the caller lets a user trust a file, for the message; ``None`` where there is no opt-in (the
            message then says to save a plain state dict).

    Returns:
        What the file holds.

    Raises:
        MissingFileError: If there is no such file.
        FileReadError: One line naming the file, when it is empty, truncated, damaged or not a ``torch.save`` file,
            or when it needs full unpickling and ``trust`` is false.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     torch.save({"w": torch.ones(2)}, f"{tmp}/weights.pt")
        ...     read_torch_file(f"{tmp}/weights.pt")
        {'w': tensor([1., 1.])}
    """
    path = check_torch_archive(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as err:  # torch.load raises many types on a damaged file (EOFError, RuntimeError, ...)
        unsafe = None if trust else _unsafe_global(err)
        if isinstance(err, pickle.UnpicklingError) and unsafe is not None:
            fix = (
                f"If you trust this file, pass {opt_in}."
                if opt_in
                else "Save the weights as a plain state dict: torch.save(model.state_dict(), path)."
            )
            raise FileReadError(
                f"{str(path)!r} holds pickled objects (it references {unsafe}) that only a full unpickling restores, "
                f"which can run code stored in the file; it was not loaded. {fix}"
            ) from None
        raise FileReadError(
            f"Cannot read {what} {str(path)!r} (torch.load, weights_only={not trust}): "
            f"{type(err).__name__}: {first_line(err)}"
        ) from None


def read_safetensors(path: str | Path, what: str = "weights file") -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and the string metadata of a ``.safetensors`` file (no code, no pickle).

    Args:
        path: The file.
        what: What the file should be, for the messages.

    Returns:
        ``(tensors, metadata)``; ``metadata`` is empty when the file has none.

    Raises:
        MissingFileError: If there is no such file.
        FileReadError: If the file is empty or not a safetensors file.
        ImportError: Without the ``safetensors`` package (``pip install 'lightning-supcon[export]'``).
    """
    path = _existing(path, what)
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise ImportError(f"Reading {str(path)!r} needs safetensors: pip install 'lightning-supcon[export]'") from None
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = dict(file.metadata() or {})
            tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 (no __iter__)
    except (SafetensorError, OSError, ValueError) as err:
        raise FileReadError(f"Cannot read {what} {str(path)!r} as safetensors: {first_line(err)}") from None
    return tensors, metadata
