"""Checkpoint metadata and encoder files: what a checkpoint records about its encoder, and reading/writing encoders.

Every LightningModule of the project records ``checkpoint["lightning_supcon"] = {"kind", "encoder", "feature_dim",
"in_channels"}``. Encoder weights come from a SupCon Lightning checkpoint, or from an exported encoder file
``{"lightning_supcon": {"kind": "supcon", "encoder", "feature_dim", "in_channels"}, "state_dict": {...}}``
written by :func:`save_encoder` / :func:`export_encoder`, which loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

CHECKPOINT_KEY = "lightning_supcon"
_COMPILED_PREFIX = "_orig_mod."  # what torch.compile inserts in the names of a compiled module's weights


_NOT_SUPCON_HINTS = {
    "cross_entropy": "a cross-entropy model is evaluated as it is (`lightning-supcon test --ckpt_path ...`)",
    "linear_probe": "give the SupCon checkpoint the probe was trained from, and this file as `--ckpt_path`",
}


def _strip_compiled(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return {key.replace(_COMPILED_PREFIX, ""): value for key, value in state_dict.items()}


def load_encoder_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The encoder metadata and weights of a SupCon checkpoint or an exported encoder file.

    The file is first read with ``weights_only=True`` (safe); a file that needs more (a Lightning checkpoint with
    pickled hyperparameters) is then **fully unpickled**, which can run arbitrary code: only load files you trust.

    Args:
        path: A Lightning checkpoint of :class:`~lightning_supcon.SupConModule`, or a file of :func:`save_encoder`.

    Returns:
        ``(metadata, encoder_state_dict)``: the ``checkpoint["lightning_supcon"]`` entry and the encoder's weights
        (without the ``encoder.`` prefix).

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If the file is not a SupCon checkpoint (no ``lightning_supcon`` entry, or another kind).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Encoder checkpoint {str(path)!r} does not exist (or is not a file).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
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
    return meta, _strip_compiled(state_dict)


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


def export_encoder(checkpoint_path: str | Path, out_path: str | Path) -> Path:
    """Extract the encoder of a SupCon Lightning checkpoint into a small file that loads with ``weights_only=True``.

    The checkpoint is fully unpickled (see :func:`load_encoder_checkpoint`): only export files you trust. Usage:
    ``python -c "from lightning_supcon.models.checkpoint import export_encoder as e; e('last.ckpt', 'enc.pt')"``.

    Returns:
        ``out_path``.

    Raises:
        FileNotFoundError, ValueError: As :func:`load_encoder_checkpoint`.
    """
    meta, state_dict = load_encoder_checkpoint(checkpoint_path)
    return _write_encoder(meta, state_dict, out_path)
