"""Reading an encoder out of a file: what a checkpoint records about its encoder, and its weights.

Every LightningModule of the project records ``checkpoint["lightning_supcon"] = {"kind", "encoder", "feature_dim",
"in_channels"}``. Encoder weights come from a SupCon Lightning checkpoint, or from an exported encoder file
``{"lightning_supcon": {"kind": "supcon", "encoder", "feature_dim", "in_channels"}, "state_dict": {...}}``
written by :func:`~lightning_supcon.encoder_files.export.save_encoder` /
:func:`~lightning_supcon.encoder_files.export.export_encoder`, which loads with ``torch.load(..., weights_only=True)``.

What loading trusts: every file the user names is read with ``torch.load(weights_only=True)``, which restores
tensors and plain values only and runs no code from the file. A file that needs full unpickling (pickled objects,
or a crafted payload) is refused with one ``ValueError`` naming it and the opt-in, ``trust_checkpoint=True``
(``trust_checkpoint: true`` in a config), which only then unpickles it in full. A damaged file (empty, truncated,
not a torch file) is one ``ValueError`` naming it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from lightning_supcon.utils.files import read_torch_file

CHECKPOINT_KEY = "lightning_supcon"
_COMPILED_PREFIX = "_orig_mod."  # what torch.compile inserts in the names of a compiled module's weights


_NOT_SUPCON_HINTS = {
    "cross_entropy": "a cross-entropy model is evaluated as it is (`lightning-supcon test --ckpt_path ...`)",
    "linear_probe": "use the SupCon checkpoint the probe was trained from (a probe's own file is evaluated with "
    "`lightning-supcon validate/test --ckpt_path`)",
}


def _strip_compiled(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return {key.replace(_COMPILED_PREFIX, ""): value for key, value in state_dict.items()}


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
        (without the ``encoder.`` prefix).

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If the file is not a SupCon checkpoint (no ``lightning_supcon`` entry, or another kind), cannot
            be read, or needs full unpickling without ``trust_checkpoint``
            (:func:`~lightning_supcon.utils.files.read_torch_file`).
    """
    path = Path(path)
    checkpoint = read_torch_file(path, trust_checkpoint, what="checkpoint")
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
