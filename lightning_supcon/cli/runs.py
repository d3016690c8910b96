"""The folder of a run, the stable name of its newest state, and which checkpoint files can be read.

Every run of an experiment gets its own folder under the experiment's ``default_root_dir``, the way Lightning's
loggers number them, and one name beside them always points at the newest state::

    outputs/digits/
    ├── last.ckpt -> version_1/checkpoints/last.ckpt   (updated whenever any run saves its last state)
    ├── version_0/                                      (the first run: nothing of it is overwritten later)
    │   ├── checkpoints/{epoch=29-step=330.ckpt, last.ckpt}
    │   ├── config.yaml, hparams.yaml, metrics.csv
    │   └── embeddings/epoch_029.png, embeddings_latest.png
    └── version_1/ ...                                  (the second run; a resumed run continues its own folder)

A checkpoint is *readable* when it is a complete zip archive of ``torch.save`` (every member's CRC checked, a
``data.pkl`` inside); this says nothing about trust: what a load may unpickle is decided where it is loaded.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path

import torch

from lightning_supcon.utils.files import FileReadError, check_torch_archive

LAST = "last.ckpt"
_VERSION = re.compile(r"^version_(\d+)$")


CheckpointError = FileReadError
"""A checkpoint file that cannot be read (missing, empty, truncated, not written by ``torch.save``): the package's one
error for files the user names (:class:`~lightning_supcon.utils.files.FileReadError`)."""


def check_readable(path: str | Path) -> Path:
    """``path`` if it is a complete ``torch.save`` archive (:func:`~lightning_supcon.utils.files.check_torch_archive`).

    Raises:
        FileReadError: If the file is missing, empty, truncated, damaged or not a ``torch.save`` file.
    """
    return check_torch_archive(path, "checkpoint")


def point_last(root: str | Path, target: str | Path) -> Path:
    """Make ``<root>/last.ckpt`` point at ``target`` (a relative link, replaced atomically; a copy where links fail).

    Args:
        root: The experiment folder (the trainer's ``default_root_dir``).
        target: The checkpoint just saved.

    Returns:
        The path of the stable name.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "version_0" / "checkpoints").mkdir(parents=True)
        >>> _ = (root / "version_0" / "checkpoints" / "last.ckpt").write_bytes(b"state")
        >>> os.readlink(point_last(root, root / "version_0" / "checkpoints" / "last.ckpt"))
        'version_0/checkpoints/last.ckpt'
    """
    root, target = Path(root), Path(target)
    link = root / LAST
    if link.absolute() == target.absolute():  # the checkpoint itself is <root>/last.ckpt: a link would loop
        return link
    if link.resolve() == target.resolve() and link.is_symlink():
        return link
    root.mkdir(parents=True, exist_ok=True)
    temporary = root / f".{LAST}.{os.getpid()}.tmp"
    temporary.unlink(missing_ok=True)
    try:
        temporary.symlink_to(os.path.relpath(target.absolute(), root.absolute()))  # a link target stays a link
    except OSError:
        shutil.copyfile(target, temporary)
    os.replace(temporary, link)
    return link


def candidates(root: str | Path) -> list[Path]:
    """Checkpoint files of the runs under ``root``, newest first: the target of ``<root>/last.ckpt`` first, then
    every ``<root>/*/checkpoints/*.ckpt`` and ``<root>/*.ckpt`` (SLURM's ``hpc_ckpt_N.ckpt``) by modification time.
    """
    root = Path(root)
    link = root / LAST
    found = [*root.glob("*/checkpoints/*.ckpt"), *(p for p in root.glob("*.ckpt") if p.name != LAST)]
    if link.is_symlink() and link.exists():
        target = link.resolve()
        found = [*(p for p in found if p.resolve() == target), target, *target.parent.glob("*.ckpt"), *found]
    elif link.is_file():  # the copy made where links fail
        found.insert(0, link)
    unique: dict[Path, Path] = {}
    for path in found:
        if path.is_file() and (path == link or not path.is_symlink()):
            unique.setdefault(path.resolve(), path)
    files = list(unique.values())
    head = files[:1] if link.exists() else []
    return head + sorted(files[len(head) :], key=lambda p: p.stat().st_mtime_ns, reverse=True)


def newest_readable(root: str | Path) -> tuple[Path | None, list[CheckpointError]]:
    """The newest readable checkpoint under ``root`` (see :func:`candidates`) and the errors of newer files skipped.

    Returns ``(None, errors)`` when there is none.
    """
    skipped: list[CheckpointError] = []
    for path in candidates(root):
        try:
            return check_readable(path), skipped
        except CheckpointError as err:
            skipped.append(err)
    return None, skipped


def run_folder(checkpoint: str | Path) -> Path | None:
    """The run folder ``.../version_N`` that holds ``checkpoint`` in its ``checkpoints/`` (a link such as
    ``<root>/last.ckpt`` followed to its file), else ``None``."""
    path = Path(checkpoint)
    parent = (path.resolve() if path.is_symlink() else path).parent
    if parent.name == "checkpoints" and _VERSION.match(parent.parent.name):
        return parent.parent
    return None


def hpc_checkpoint(root: str | Path) -> Path | None:
    """The newest ``<root>/hpc_ckpt_N.ckpt`` (largest ``N``: what SLURM's requeued job resumes from), else ``None``."""
    files = [p for p in Path(root).glob("hpc_ckpt_*.ckpt") if p.stem.rpartition("_")[2].isdigit()]
    return max(files, key=lambda p: int(p.stem.rpartition("_")[2])) if files else None


def hpc_run_folder(root: str | Path) -> Path | None:
    """The run folder of :func:`hpc_checkpoint`, read from the checkpoint callback's ``dirpath`` saved in it; ``None``
    without such a file or folder."""
    newest = hpc_checkpoint(root)
    if newest is None:
        return None
    try:
        state = torch.load(check_readable(newest), map_location="cpu", weights_only=True, mmap=True)
    except (CheckpointError, RuntimeError, pickle.UnpicklingError):
        return None
    for value in (state.get("callbacks") or {}).values():
        if isinstance(value, dict) and isinstance(value.get("dirpath"), str):
            folder = run_folder(Path(value["dirpath"]) / LAST)
            if folder is not None:
                return folder
    return None


def run_version(folder: str | Path) -> int:
    """The ``N`` of a run folder ``version_N``.

    Example:
        >>> run_version("outputs/digits/version_3")
        3
    """
    match = _VERSION.match(Path(folder).name)
    if match is None:
        raise ValueError(f"Expected a run folder named version_N, but got {str(folder)!r}.")
    return int(match.group(1))


def next_version(root: str | Path) -> int:
    """One more than the largest ``N`` of the ``version_N`` folders under ``root`` (0 when there is none)."""
    versions = [int(m.group(1)) for p in Path(root).glob("version_*") if p.is_dir() and (m := _VERSION.match(p.name))]
    return max(versions, default=-1) + 1


def check_model_kind(path: str | Path, class_path: str | None, kind: str | None) -> None:
    """Refuse ``--ckpt_path`` of another kind of model than the config's, in one line.

    LightningCLI replaces the config's model with the checkpoint's own class and hyperparameters when it reads
    ``--ckpt_path`` (``LightningCLI._parse_ckpt_path``), before the model's ``on_load_checkpoint`` could compare
    them: ``validate --config configs/digits.yaml --ckpt_path <a linear probe's>.ckpt`` would report the probe's
    top-1 as the SupCon model's. The kind recorded in the checkpoint (``checkpoint["lightning_supcon"]["kind"]``)
    must be the config model's ``checkpoint_kind``.

    Args:
        path: The checkpoint file (readable: :func:`check_readable`).
        class_path: The config's ``model.class_path``.
        kind: That class's ``checkpoint_kind``; ``None`` (a model of another package) checks nothing.

    Raises:
        CheckpointError: When the checkpoint records another kind.
    """
    if kind is None:
        return
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError, OSError, ValueError):
        return  # not ours to judge here: the load that follows reports it
    saved = checkpoint.get("lightning_supcon") if isinstance(checkpoint, dict) else None
    saved_kind = saved.get("kind") if isinstance(saved, dict) else None
    if saved_kind is None or saved_kind == kind:
        return
    saved_class = (checkpoint.get("hyper_parameters") or {}).get("_class_path") or "?"
    raise CheckpointError(
        f"--ckpt_path {path} holds a {saved_kind} model ({saved_class}), but the config's model is {class_path} "
        f"({kind}): give a checkpoint of this model, or the config it was trained with (its run's config.yaml)"
    )
