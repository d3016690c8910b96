"""Load a network's weights from a local file: ``.pt``/``.pth`` (``torch.save``) or ``.safetensors``.

:func:`load_weights` reads a state dict without running code (``torch.load(weights_only=True)`` or safetensors),
finds the network's keys in it whatever common wrapper prefix they carry, and loads them strictly: a file that
does not fit fails with one line naming a few missing, unexpected or mis-shaped keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from lightning_supcon.utils.files import FileReadError, read_safetensors, read_torch_file

__all__ = ["PREFIXES", "load_weights", "read_state_dict", "strip_prefix"]

PREFIXES = ("module.", "_orig_mod.", "encoder.", "backbone.", "model.", "net.")
"""Wrapper prefixes stripped from the file's keys: DDP (``module.``), ``torch.compile`` (``_orig_mod.``), a
LightningModule's or a wrapper's attribute (``encoder.``, ``backbone.``, ``model.``, ``net.``)."""
_NESTED = ("state_dict", "model", "model_state_dict", "module")  # where checkpoints keep the weights


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file: a state dict, or a checkpoint dict holding one under ``state_dict``/``model``.

    Args:
        path: A ``torch.save`` file (read with ``weights_only=True``: no code runs) or a ``.safetensors`` file.

    Returns:
        Key -> tensor.

    Raises:
        MissingFileError: If ``path`` is not a file.
        FileReadError: One line, if the file holds no tensors or cannot be read as weights
            (:mod:`lightning_supcon.utils.files`).
        ImportError: For ``.safetensors`` without the ``safetensors`` package.
    """
    if Path(path).suffix == ".safetensors":
        return read_safetensors(path, what="weights file")[0]
    content: Any = read_torch_file(path, what="weights file", opt_in=None)
    for key in _NESTED:
        if isinstance(content, dict) and isinstance(content.get(key), dict):
            content = content[key]
            break
    tensors = {k: v for k, v in content.items() if isinstance(v, Tensor)} if isinstance(content, dict) else {}
    if not tensors:
        raise FileReadError(f"{str(path)!r} holds no state dict (a dict of tensors, or one under 'state_dict')")
    return tensors


def strip_prefix(state_dict: dict[str, Tensor], keys: Iterable[str]) -> dict[str, Tensor]:
    """The entries of ``state_dict`` under the wrapper prefix (:data:`PREFIXES`, repeated) that best match ``keys``.

    Up to three nested prefixes are tried (``module.encoder.conv1.weight`` -> ``conv1.weight``); the stripping that
    matches most of ``keys`` wins (none if the keys already match best), and entries outside the prefix are dropped
    (e.g. a SupCon checkpoint's ``head.*`` next to its ``encoder.*``).

    Example:
        >>> import torch
        >>> weights = {"module.encoder.w": torch.zeros(1), "module.head.w": torch.ones(1)}
        >>> strip_prefix(weights, ["w"])
        {'w': tensor([0.])}
    """
    wanted = set(keys)
    best, best_score = state_dict, len(wanted & set(state_dict))
    frontier = [state_dict]
    for _ in range(3):  # up to three nested wrappers, e.g. module.model.encoder.
        frontier = [
            {key[len(prefix) :]: value for key, value in candidate.items() if key.startswith(prefix)}
            for candidate in frontier
            for prefix in PREFIXES
            if any(key.startswith(prefix) for key in candidate)
        ]
        for candidate in frontier:
            score = len(wanted & set(candidate))
            if score > best_score:
                best, best_score = candidate, score
    return best


def load_weights(module: nn.Module, path: str | Path, ignore: Iterable[str] = ()) -> None:
    """Load the weights file ``path`` into ``module``, strictly, with common prefixes stripped.

    Args:
        module: The network (e.g. a torchvision or timm network without its classifier).
        path: ``.pt``/``.pth`` or ``.safetensors``: the network's state dict, possibly inside a checkpoint dict
            (``state_dict``/``model``) and under a wrapper prefix (:data:`PREFIXES`).
        ignore: Keys of the file to drop when the module lacks them, e.g. the removed classifier's
            ``fc.weight``, ``fc.bias`` in a full torchvision state dict.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: One line naming up to three missing, unexpected and mis-shaped keys, if the file does not fit.

    Example:
        >>> import tempfile
        >>> import torch
        >>> source, target = nn.Linear(2, 3), nn.Linear(2, 3)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, f"{tmp}/w.pt")
        ...     load_weights(target, f"{tmp}/w.pt")
        >>> torch.equal(source.weight, target.weight)
        True
    """
    own = module.state_dict()
    state_dict = strip_prefix(read_state_dict(path), own)
    ignored = set(ignore) - set(own)
    state_dict = {key: value for key, value in state_dict.items() if key not in ignored}
    missing = [key for key in own if key not in state_dict]
    unexpected = [key for key in state_dict if key not in own]
    shapes = [
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(own[key].shape)}"
        for key in own
        if key in state_dict and state_dict[key].shape != own[key].shape
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{label} {len(keys)} (e.g. {', '.join(keys[:3])})"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("mis-shaped (file vs model)", shapes),
            )
            if keys
        ]
        raise ValueError(
            f"The weights in {str(path)!r} do not fit `{type(module).__name__}`: {'; '.join(parts)}; "
            f"the file must hold this network's state dict (wrapper prefixes {', '.join(PREFIXES)} are stripped)"
        )
    module.load_state_dict(state_dict)
