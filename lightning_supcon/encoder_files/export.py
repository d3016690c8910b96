"""Export a SupCon encoder for use outside this package: weights-only ``.pt``, ``.safetensors``, TorchScript, ONNX.

    python -m lightning_supcon.encoder_files.export outputs/cifar10_supcon/checkpoints/last.ckpt exported/encoder
    python -m lightning_supcon.encoder_files.export last.ckpt exported/ --formats safetensors onnx --image-size 224

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from lightning_supcon.encoder_files.load import build_encoder_from_weights
from lightning_supcon.encoder_files.read import CHECKPOINT_KEY, _strip_compiled, load_encoder_checkpoint
from lightning_supcon.utils.files import first_line

__all__ = ["FORMATS", "SUFFIXES", "ExportFormat", "export_encoder", "export_files", "main", "save_encoder"]

ExportFormat = Literal["pt", "safetensors", "torchscript", "onnx"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)
SUFFIXES: dict[str, str] = {"pt": ".pt", "safetensors": ".safetensors", "torchscript": ".ts", "onnx": ".onnx"}
ONNX_OPSET = 17
CHECK_ATOL, CHECK_RTOL = 1e-4, 1e-3
"""How close (absolute, relative) TorchScript and ONNX features must be to PyTorch's on the check images."""
DEFAULT_IMAGE_SIZE = 32


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


def _check(name: str, exported: Callable[[Tensor], Tensor], expected: Tensor, images: Tensor) -> None:
    """Raise if the exported model's features on ``images`` are not PyTorch's ``expected``."""
    got = exported(images)
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=CHECK_RTOL, atol=CHECK_ATOL):
        error = (got - expected).abs().max().item() if got.shape == expected.shape else f"shape {tuple(got.shape)}"
        raise ValueError(
            f"the {name} model's features differ from PyTorch's on {tuple(images.shape)} images (max error {error}, "
            f"expected shape {tuple(expected.shape)})"
        )


def _check_images(meta: dict[str, Any], image_size: int) -> Tensor:
    """Two random ``(C, image_size, image_size)`` images in ``[0, 1]``, normalised as the encoder's inputs are."""
    channels = int(meta.get("in_channels") or 3)
    images = torch.rand(2, channels, image_size, image_size, generator=torch.Generator().manual_seed(0))
    preprocessing = meta.get("preprocessing") or {}
    if preprocessing.get("mean") and len(preprocessing["mean"]) == channels:
        mean, std = (torch.tensor(preprocessing[key]).view(1, -1, 1, 1) for key in ("mean", "std"))
        images = (images - mean) / std
    return images


def _write_torchscript(meta: dict[str, Any], encoder: nn.Module, path: Path, image_size: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still the portable C++ format
        scripted = torch.jit.script(encoder)
        images = _check_images(meta, image_size)
        with torch.no_grad():
            _check("TorchScript", scripted, encoder(images), images)
        torch.jit.save(scripted, str(path), _extra_files={f"{CHECKPOINT_KEY}.json": json.dumps(meta)})


def _onnx_export(encoder: nn.Module, path: Path, example: Tensor, dynamic_size: bool) -> None:
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation and tracer warnings
        torch.onnx.export(
            encoder,
            (example,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": axes, "features": {0: "batch"}},
        )


class _FixedAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` for one input size, as two matrix products: ONNX has no adaptive pooling to an output
    size that does not divide the input (e.g. AlexNet's 6x6 from 1x1 at 64 px), matrix products it has.

    Bin ``i`` of ``o`` over ``n`` inputs averages inputs ``floor(i n / o)`` to ``ceil((i + 1) n / o) - 1``, as
    PyTorch's adaptive pooling does.
    """

    rows: Tensor
    cols: Tensor

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("rows", self._bins(in_size[0], out_size[0]))  # (out_h, in_h)
        self.register_buffer("cols", self._bins(in_size[1], out_size[1]).T.contiguous())  # (in_w, out_w)

    @staticmethod
    def _bins(n: int, o: int) -> Tensor:
        matrix = torch.zeros(o, n)
        for i in range(o):
            start, end = (i * n) // o, -(-((i + 1) * n) // o)
            matrix[i, start:end] = 1.0 / (end - start)
        return matrix

    def forward(self, x: Tensor) -> Tensor:
        return self.rows @ x @ self.cols  # (o_h, h) @ (B, C, h, w) @ (w, o_w) -> (B, C, o_h, o_w)


def _fixed_size_pooling(encoder: nn.Module, images: Tensor) -> nn.Module:
    """A copy of ``encoder`` whose adaptive average poolings are fixed to the sizes they see on ``images``."""
    import copy

    fixed = copy.deepcopy(encoder)
    sizes: dict[str, tuple[int, int]] = {}
    pools = {name: m for name, m in fixed.named_modules() if isinstance(m, nn.AdaptiveAvgPool2d)}

    def recorder(name: str) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
        def record(module: nn.Module, args: tuple[Tensor, ...]) -> None:  # returns None: the input is unchanged
            sizes.setdefault(name, (int(args[0].shape[-2]), int(args[0].shape[-1])))

        return record

    hooks = [module.register_forward_pre_hook(recorder(name)) for name, module in pools.items()]
    with torch.no_grad():
        fixed(images)
    for hook in hooks:
        hook.remove()
    for name, module in pools.items():
        if name in sizes:
            out: Any = module.output_size
            out_hw = (out, out) if isinstance(out, int) else tuple(out)
            out_size = (
                sizes[name][0] if out_hw[0] is None else int(out_hw[0]),
                sizes[name][1] if out_hw[1] is None else int(out_hw[1]),
            )
            parent_name, _, child = name.rpartition(".")
            parent = fixed.get_submodule(parent_name) if parent_name else fixed
            setattr(parent, child, _FixedAdaptiveAvgPool2d(sizes[name], out_size))
    return fixed


def _write_onnx(meta: dict[str, Any], encoder: nn.Module, path: Path, image_size: int) -> None:
    """Export with dynamic height and width if the network runs at twice the size in PyTorch and in onnxruntime
    alike, else with them fixed at ``image_size`` (said in a warning); checked against PyTorch either way."""
    import onnx
    import onnxruntime

    def run(images: Tensor) -> Tensor:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"images": images.numpy()})[0])

    images, larger = _check_images(meta, image_size), _check_images(meta, 2 * image_size)
    with torch.no_grad():
        expected = encoder(images)
        try:
            expected_larger: Tensor | None = encoder(larger)
        except Exception:  # the network itself takes one size only (e.g. a ViT's position embeddings)
            expected_larger = None
    dynamic = expected_larger is not None
    if dynamic:
        try:
            _onnx_export(encoder, path, images[:1], dynamic_size=True)
            _check("ONNX", run, expected, images)
            assert expected_larger is not None
            _check("ONNX", run, expected_larger, larger)
        except Exception:  # e.g. adaptive pooling to 6x6 (AlexNet, VGG) has no dynamic-size ONNX operator
            dynamic = False
    if not dynamic:
        warnings.warn(
            f"The ONNX encoder {str(path)!r} takes {image_size}x{image_size} images only: its height and width cannot "
            "be dynamic in ONNX (adaptive pooling to a grid other than 1x1, or a network of one input size)",
            stacklevel=3,
        )
        _onnx_export(_fixed_size_pooling(encoder, images), path, images[:1], dynamic_size=False)
        _check("ONNX", run, expected, images)
    model = onnx.load(str(path))
    onnx_meta = {**meta, "onnx_image_size": None if dynamic else image_size}
    onnx.helper.set_model_props(model, {CHECKPOINT_KEY: json.dumps(onnx_meta)})
    onnx.save(model, str(path))


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
                _write_onnx(meta, encoder, path, image_size)
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
    command: ``python -m lightning_supcon.encoder_files.export last.ckpt exported/encoder``). Load any of them with
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
    """``python -m lightning_supcon.encoder_files.export CKPT OUT [--formats ...]``: one line per file written.

    A missing or unreadable checkpoint, or a bad option, is a one-line error (exit code 2).
    """
    parser = argparse.ArgumentParser(
        prog="python -m lightning_supcon.encoder_files.export",
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
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            print(f"note: {warning.message}", file=sys.stderr)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return paths


if __name__ == "__main__":
    main()
