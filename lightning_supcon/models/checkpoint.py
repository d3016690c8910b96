"""Checkpoint metadata and encoder files: what a checkpoint records about its encoder, and reading/writing encoders.

Every LightningModule of the project records ``checkpoint["lightning_supcon"] = {"kind", "encoder", "feature_dim",
"in_channels"}``. Encoder weights come from a SupCon Lightning checkpoint, or from an exported encoder file
``{"lightning_supcon": {"kind": "supcon", "encoder", "feature_dim", "in_channels"}, "state_dict": {...}}``
written by :func:`save_encoder` / :func:`export_encoder`, which loads with ``torch.load(..., weights_only=True)``.

What loading trusts: every file the user names is read with ``torch.load(weights_only=True)``, which restores
tensors and plain values only and runs no code from the file. A file that needs full unpickling (pickled objects,
or a crafted payload) is refused with one ``ValueError`` naming it and the opt-in, ``trust_checkpoint=True``
(``trust_checkpoint: true`` in a config), which only then unpickles it in full. A damaged file (empty, truncated,
not a torch file) is one ``ValueError`` naming it too.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_supcon.models.resnet import rename_legacy_keys

CHECKPOINT_KEY = "lightning_supcon"
_COMPILED_PREFIX = "_orig_mod."  # what torch.compile inserts in the names of a compiled module's weights


_NOT_SUPCON_HINTS = {
    "cross_entropy": "a cross-entropy model is evaluated as it is (`lightning-supcon test --ckpt_path ...`)",
    "linear_probe": "give the SupCon checkpoint the probe was trained from, and this file as `--ckpt_path`",
}


def _strip_compiled(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return {key.replace(_COMPILED_PREFIX, ""): value for key, value in state_dict.items()}


def _unsafe_global(error: BaseException) -> str | None:
    """The global a weights-only load refused (``builtins.open``), or ``None`` when it failed for another reason."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    return match.group(1) if match else None


def read_checkpoint_file(path: str | Path, trust_checkpoint: bool = False) -> Any:
    """``torch.load`` a file the user named, onto the CPU, with ``weights_only=True`` unless it is trusted.

    Args:
        path: The file.
        trust_checkpoint: Unpickle the file in full (``weights_only=False``), which can run code stored in it.
            Only for files you trust that need it.

    Returns:
        What the file holds.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: Naming the file, when it needs full unpickling and ``trust_checkpoint`` is false, or when it
            cannot be read (empty, truncated, not a file of ``torch.save``).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     torch.save({"w": torch.ones(2)}, f"{tmp}/weights.pt")
        ...     read_checkpoint_file(f"{tmp}/weights.pt")
        {'w': tensor([1., 1.])}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist (or is not a file).")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except OSError:
        raise
    except Exception as err:  # torch.load raises many types on a damaged file (EOFError, RuntimeError, ...)
        unsafe = None if trust_checkpoint else _unsafe_global(err)
        if isinstance(err, pickle.UnpicklingError) and unsafe is not None:
            raise ValueError(
                f"{str(path)!r} holds pickled objects (it references {unsafe}) that only a full unpickling restores, "
                "which can run code stored in the file; it was not loaded. If you trust this file, pass "
                "`trust_checkpoint=True` (`trust_checkpoint: true` in a config)."
            ) from None
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"{str(path)!r} is not a readable checkpoint (empty, truncated or not written by torch.save): "
            f"{type(err).__name__}: {first_line}"
        ) from None


def load_encoder_checkpoint(
    path: str | Path, trust_checkpoint: bool = False
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The encoder metadata and weights of a SupCon checkpoint or an exported encoder file.

    The file is read with ``weights_only=True`` (see the module docstring): it runs no code from the file.

    Args:
        path: A Lightning checkpoint of :class:`~lightning_supcon.SupConModule`, or a file of :func:`save_encoder`.
        trust_checkpoint: Unpickle a file that needs it in full, which can run code stored in it (files you trust).

    Returns:
        ``(metadata, encoder_state_dict)``: the ``checkpoint["lightning_supcon"]`` entry and the encoder's weights
        (without the ``encoder.`` prefix; the project's hand-written ResNet keys of before 0.1 renamed to
        torchvision's, :func:`~lightning_supcon.models.resnet.rename_legacy_keys`).

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If the file is not a SupCon checkpoint (no ``lightning_supcon`` entry, or another kind), cannot
            be read, or needs full unpickling without ``trust_checkpoint`` (see :func:`read_checkpoint_file`).
    """
    path = Path(path)
    checkpoint = read_checkpoint_file(path, trust_checkpoint)
    meta = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict):
        raise ValueError(
            f"{str(path)!r} is not a SupCon checkpoint: it has no {CHECKPOINT_KEY!r} entry (expected a checkpoint of "
            "SupConModule or a file written by `export_encoder`)."
        )
    kind = meta.get("kind")
    if kind != "supcon":
        hint = _NOT_SUPCON_HINTS.get(str(kind), "train an encoder with SupConModule first")
        raise ValueError(f"{str(path)!r} is not a SupCon checkpoint: it holds a {kind!r} model; {hint}.")
    state_dict: dict[str, Tensor] | None = checkpoint.get("state_dict")
    if not isinstance(state_dict, dict):
        raise ValueError(f"{str(path)!r} has SupCon metadata but no 'state_dict' of weights: the file is incomplete.")
    if "pytorch-lightning_version" in checkpoint:  # a Lightning checkpoint: the whole module's weights
        state_dict = {key[len("encoder.") :]: value for key, value in state_dict.items() if key.startswith("encoder.")}
    return meta, rename_legacy_keys(_strip_compiled(state_dict))


def _write_encoder(meta: dict[str, Any], state_dict: dict[str, Tensor], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state_dict = {key: value.detach().cpu() for key, value in _strip_compiled(state_dict).items()}
    torch.save({CHECKPOINT_KEY: dict(meta), "state_dict": state_dict}, path)
    return path


def save_encoder(model: nn.Module, path: str | Path) -> Path:
    """Write ``model.encoder``'s weights and metadata to ``path``, loadable with ``weights_only=True``.

    Args:
        model: A :class:`~lightning_supcon.SupConModule` (or any module with ``encoder`` and an ``on_save_checkpoint``
            that records the ``lightning_supcon`` metadata).
        path: Output file; parent folders are created.

    Returns:
        ``path``.

    Example:
        >>> import tempfile
        >>> from lightning_supcon import SupConModule
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = save_encoder(SupConModule(encoder="small_cnn", in_channels=1), f"{tmp}/encoder.pt")
        ...     file = torch.load(path, weights_only=True)
        >>> file["lightning_supcon"]
        {'kind': 'supcon', 'encoder': 'small_cnn', 'feature_dim': 128, 'in_channels': 1}
    """
    checkpoint: dict[str, Any] = {}
    model.on_save_checkpoint(checkpoint)  # type: ignore[operator]
    encoder = model.encoder
    assert isinstance(encoder, nn.Module)
    return _write_encoder(checkpoint[CHECKPOINT_KEY], encoder.state_dict(), path)


def export_encoder(
    checkpoint_path: str | Path,
    out_path: str | Path,
    trust_checkpoint: bool = False,
    formats: Sequence[str] = ("pt",),
    image_size: int = 32,
) -> Path:
    """Extract the encoder of a SupCon Lightning checkpoint into files for use outside its training code.

    The checkpoint is read with ``weights_only=True`` unless ``trust_checkpoint`` (see
    :func:`load_encoder_checkpoint`). By default one small weights-only file is written at ``out_path``; ``formats``
    among ``("pt", "safetensors", "torchscript", "onnx")`` writes each beside it, ``out_path`` with the format's
    suffix (``.pt``, ``.safetensors``, ``.ts``, ``.onnx``; see :mod:`lightning_supcon.models.export`, also a
    command: ``python -m lightning_supcon.models.export last.ckpt exported/encoder``). Load any of them with
    :func:`lightning_supcon.load_encoder`.

    Args:
        checkpoint_path: A SupConModule checkpoint, or an exported ``.pt`` encoder file.
        out_path: The weights-only file (default ``formats``), or the base path of the files.
        trust_checkpoint: Unpickle a checkpoint that needs it in full (files you trust only).
        formats: The formats to write.
        image_size: Side of the example image the ONNX export traces with (the model's size stays dynamic).

    Returns:
        ``out_path`` by default; otherwise the ``.pt`` file's path if written, else the first format's.

    Raises:
        FileNotFoundError, ValueError: As :func:`load_encoder_checkpoint`; ``ValueError`` for unknown formats.
    """
    meta, state_dict = load_encoder_checkpoint(checkpoint_path, trust_checkpoint)
    if tuple(formats) == ("pt",):
        return _write_encoder(meta, state_dict, out_path)
    from lightning_supcon.models.export import export_files  # it imports this module

    paths = export_files(meta, state_dict, out_path, formats, image_size)
    return paths.get("pt", next(iter(paths.values())))
