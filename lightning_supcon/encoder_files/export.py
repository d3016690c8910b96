"""Export a SupCon encoder for use outside this package: weights-only ``.pt``, ``.safetensors``, TorchScript, ONNX.

    lightning-supcon-export outputs/cifar10_supcon/checkpoints/last.ckpt exported/encoder
    lightning-supcon-export last.ckpt exported/ --formats safetensors onnx --image-size 224

Every file carries the encoder's metadata ``{"kind", "encoder", "feature_dim", "in_channels", "encoder_args",
"preprocessing"}``: in the ``.pt`` file's ``lightning_supcon`` entry, as the ``lightning_supcon`` JSON string of the
safetensors metadata, in the TorchScript archive's extra file ``lightning_supcon.json`` and in the ONNX model's
``metadata_props``. ``encoder_args`` rebuilds the network (its options included); ``preprocessing`` is what the
encoder reads: ``(x - mean) / std`` of ``(B, in_channels, image_size, image_size)`` images in ``[0, 1]`` (resized
to ``resize`` and centre-cropped first, when recorded). Read any of them back with
:func:`lightning_supcon.load_encoder` (``normalize=True`` takes ``[0, 1]`` images). All files get the same permissions
(``0666`` less the umask).

Formats and their files (``OUT`` given as ``exported/encoder`` or ``exported/encoder.pt``; a folder gives
``folder/encoder.*``):

- ``pt``: ``OUT.pt``, ``{"lightning_supcon": meta, "state_dict": ...}``, loads with ``torch.load(weights_only=True)``.
- ``safetensors``: ``OUT.safetensors``, the state dict (no code, no pickle), for any framework.
- ``torchscript``: ``OUT.ts``, ``torch.jit.script`` of the encoder in eval mode: runs without this package
  (``torch.jit.load``). TorchScript is deprecated by PyTorch in favour of ``torch.export``, but still loads in C++.
- ``onnx``: ``OUT.onnx`` (opset 17, the TorchScript-based exporter, ``dynamo=False``, which needs no
  ``onnxscript``): input ``images`` ``(batch, C, height, width)``, output ``features`` ``(batch, feature_dim)``,
  the batch dynamic; height and width are dynamic when the network gives onnxruntime's features at twice the
  image size too, else fixed at the image size (adaptive pooling to a grid other than 1x1, as in AlexNet and VGG,
  or a ViT's fixed position embeddings), which is said in a warning and recorded as ``onnx_image_size``; there,
  adaptive average pooling is exported as the equivalent matrix products for that size (ONNX has no adaptive pooling
  to a size that does not divide its input).

The TorchScript and ONNX files are checked against the PyTorch encoder on random images before the export returns;
an export that fails is one ``ValueError`` line naming the encoder and the format.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from lightning_supcon.encoder_files.load import build_encoder_from_weights
from lightning_supcon.encoder_files.onnx_export import check_features, check_images, write_onnx
from lightning_supcon.encoder_files.read import CHECKPOINT_KEY, _strip_compiled, load_encoder_checkpoint
from lightning_supcon.utils.files import first_line

__all__ = ["FORMATS", "SUFFIXES", "ExportFormat", "export_encoder", "export_files", "main", "save_encoder"]

ExportFormat = Literal["pt", "safetensors", "torchscript", "onnx"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)
SUFFIXES: dict[str, str] = {"pt": ".pt", "safetensors": ".safetensors", "torchscript": ".ts", "onnx": ".onnx"}
DEFAULT_IMAGE_SIZE = 32

PACKAGE = Path(__file__).resolve().parents[1]  # lightning_supcon/: whose warnings the command prints as notes


def output_base(out: str | Path) -> Path:
    """The path without suffix of the files to write: ``out`` less a known suffix, or ``out/encoder`` for a folder.

    Example:
        >>> str(output_base("exported/encoder.pt")), str(output_base("exported/encoder")), str(output_base("new/"))
        ('exported/encoder', 'exported/encoder', 'new/encoder')
    """
    folder = isinstance(out, str) and out.endswith(("/", os.sep))  # Path() drops a trailing separator
    out = Path(out)
    if folder or out.is_dir():
        return out / "encoder"
    return out.with_suffix("") if out.suffix in SUFFIXES.values() else out


def _check_formats(formats: Sequence[str]) -> None:
    unknown = [name for name in formats if name not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"Expected `formats` among {FORMATS} (at least one), but got {list(formats)}")


def _write_safetensors(meta: dict[str, Any], state_dict: dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save

    tensors = {key: value.contiguous() for key, value in state_dict.items()}
    # save() and an ordinary write, not save_file(): it creates the file 0600 where every other format is 0666 - umask
    path.write_bytes(save(tensors, metadata={CHECKPOINT_KEY: json.dumps(meta), "format": "pt"}))


def _write_torchscript(meta: dict[str, Any], encoder: nn.Module, path: Path, image_size: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still the portable C++ format
        scripted = torch.jit.script(encoder)
        images = check_images(meta, image_size)
        with torch.no_grad():
            check_features("TorchScript", scripted, encoder(images), images)
        torch.jit.save(scripted, str(path), _extra_files={f"{CHECKPOINT_KEY}.json": json.dumps(meta)})


def export_files(
    meta: dict[str, Any],
    state_dict: dict[str, Tensor],
    out: str | Path,
    formats: Sequence[str] = FORMATS,
    image_size: int | None = None,
) -> dict[str, Path]:
    """Write an encoder (metadata and weights, as :func:`load_encoder_checkpoint` returns) in ``formats``.

    Args:
        meta: The ``lightning_supcon`` metadata (``encoder`` must name a project encoder for the traced formats).
        state_dict: The encoder's weights.
        out: ``base`` or ``base.<suffix>`` (each format gets its own suffix, :data:`SUFFIXES`), or a folder.
        formats: Among :data:`FORMATS`.
        image_size: Side of the images the TorchScript and ONNX files are checked (and ONNX traced) with; ``None``:
            the recorded ``preprocessing["image_size"]``, else 32.

    Returns:
        The path written for each format.

    Raises:
        ValueError: One line, for unknown formats, an encoder that cannot be rebuilt from its weights
            (torchscript/onnx), or an export that fails or whose features differ from PyTorch's.

    Warns:
        UserWarning: When the ONNX model's height and width must be fixed at ``image_size``.

    Example:
        >>> import tempfile
        >>> from lightning_supcon.nets import SmallCNN
        >>> meta = {"kind": "supcon", "encoder": "small_cnn", "feature_dim": 128, "in_channels": 1}
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     paths = export_files(meta, SmallCNN().state_dict(), f"{tmp}/enc", formats=("pt", "safetensors"))
        ...     sorted(path.name for path in paths.values())
        ['enc.pt', 'enc.safetensors']
    """
    _check_formats(formats)
    base = output_base(out)
    base.parent.mkdir(parents=True, exist_ok=True)
    state_dict = {key: value.detach().cpu() for key, value in state_dict.items()}
    paths = {name: base.with_name(base.name + SUFFIXES[name]) for name in formats}
    if image_size is None:
        image_size = int((meta.get("preprocessing") or {}).get("image_size") or DEFAULT_IMAGE_SIZE)
    encoder = build_encoder_from_weights(meta, state_dict) if {"torchscript", "onnx"} & set(formats) else None
    for name, path in paths.items():
        try:
            if name == "pt":
                _write_encoder(meta, state_dict, path)
            elif name == "safetensors":
                _write_safetensors(meta, state_dict, path)
            elif name == "torchscript":
                assert encoder is not None
                _write_torchscript(meta, encoder, path, image_size)
            else:
                assert encoder is not None
                write_onnx(meta, encoder, path, image_size)
        except Exception as err:  # the exporters raise many types, with pages of trace: one line
            raise ValueError(
                f"Could not export encoder {meta.get('encoder')!r} to {name} ({str(path)!r}): {first_line(err)}"
            ) from None
    return paths


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
        >>> meta = file["lightning_supcon"]
        >>> meta["encoder"], meta["encoder_args"], meta["preprocessing"]  # no Trainer, no DataModule: no preprocessing
        ('small_cnn', {'class': 'SmallCNN', 'init_args': {'in_channels': 1, 'width': 32, 'feature_dim': 128}}, None)
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
    image_size: int | None = None,
) -> Path:
    """Extract the encoder of a SupCon Lightning checkpoint into files for use outside its training code.

    The checkpoint is read with ``weights_only=True`` unless ``trust_checkpoint`` (see
    :func:`load_encoder_checkpoint`). By default one small weights-only file is written at ``out_path``; ``formats``
    among ``("pt", "safetensors", "torchscript", "onnx")`` writes each beside it, ``out_path`` with the format's
    suffix (``.pt``, ``.safetensors``, ``.ts``, ``.onnx``; see :mod:`lightning_supcon.encoder_files.export`, also a
    command: ``lightning-supcon-export last.ckpt exported/encoder``). Load any of them with
    :func:`lightning_supcon.load_encoder`.

    Args:
        checkpoint_path: A SupConModule checkpoint, or an exported ``.pt`` encoder file.
        out_path: The weights-only file (default ``formats``), or the base path of the files.
        trust_checkpoint: Unpickle a checkpoint that needs it in full (files you trust only).
        formats: The formats to write.
        image_size: Side of the images the TorchScript and ONNX files are checked with (:func:`export_files`).

    Returns:
        ``out_path`` by default; otherwise the ``.pt`` file's path if written, else the first format's.

    Raises:
        FileNotFoundError, ValueError: As :func:`load_encoder_checkpoint`; ``ValueError`` for unknown formats.
    """
    meta, state_dict = load_encoder_checkpoint(checkpoint_path, trust_checkpoint)
    if tuple(formats) == ("pt",):
        return _write_encoder(meta, state_dict, out_path)
    paths = export_files(meta, state_dict, out_path, formats, image_size)
    return paths.get("pt", next(iter(paths.values())))


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    """``lightning-supcon-export CKPT OUT [--formats ...]`` (or ``python -m lightning_supcon.encoder_files``): one
    line per file written.

    A missing or unreadable checkpoint, or a bad option, is a one-line error (exit code 2).
    """
    parser = argparse.ArgumentParser(
        prog="lightning-supcon-export",
        description="Export the encoder of a SupCon checkpoint (or of an exported .pt encoder file).",
    )
    parser.add_argument("checkpoint", help="SupConModule Lightning checkpoint (.ckpt) or exported encoder (.pt)")
    parser.add_argument("out", help="output base path (suffixes added per format) or an existing folder")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS, help="default: all")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="image side to check (and trace ONNX) at; default: the recorded one",
    )
    parser.add_argument("--trust-checkpoint", action="store_true", help="unpickle a checkpoint that needs it")
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            meta, state_dict = load_encoder_checkpoint(args.checkpoint, args.trust_checkpoint)
            paths = export_files(meta, state_dict, args.out, args.formats, args.image_size)
    except (FileNotFoundError, ValueError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    for warning in caught:  # the notes of this package (a fixed ONNX size, ...), not torch's own chatter
        if issubclass(warning.category, UserWarning) and Path(warning.filename).resolve().is_relative_to(PACKAGE):
            print(f"note: {warning.message}", file=sys.stderr)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return paths


if __name__ == "__main__":
    main()
