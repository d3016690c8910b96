"""Checking an exported encoder against PyTorch, and the ONNX export with the image sizes ONNX can take.

Used by :mod:`lightning_supcon.encoder_files.export`. Height and width are dynamic in the ONNX model when the network
gives onnxruntime's features at twice the image size too; otherwise (adaptive pooling to a grid other than 1x1, as in
AlexNet and VGG, or a network of one input size, as a ViT) they are fixed at the image size, with adaptive average
pooling written as the matrix products it is at that size.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_supcon.encoder_files.read import CHECKPOINT_KEY

__all__ = ["CHECK_ATOL", "CHECK_RTOL", "ONNX_OPSET", "check_features", "check_images", "write_onnx"]

ONNX_OPSET = 17
CHECK_ATOL, CHECK_RTOL = 1e-4, 1e-3
"""How close (absolute, relative) TorchScript and ONNX features must be to PyTorch's on the check images."""


def check_features(name: str, exported: Callable[[Tensor], Tensor], expected: Tensor, images: Tensor) -> None:
    """Raise if the exported model's features on ``images`` are not PyTorch's ``expected``."""
    got = exported(images)
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=CHECK_RTOL, atol=CHECK_ATOL):
        error = (got - expected).abs().max().item() if got.shape == expected.shape else f"shape {tuple(got.shape)}"
        raise ValueError(
            f"the {name} model's features differ from PyTorch's on {tuple(images.shape)} images (max error {error}, "
            f"expected shape {tuple(expected.shape)})"
        )


def check_images(meta: dict[str, Any], image_size: int) -> Tensor:
    """Two random ``(C, image_size, image_size)`` images in ``[0, 1]``, normalised as the encoder's inputs are."""
    channels = int(meta.get("in_channels") or 3)
    images = torch.rand(2, channels, image_size, image_size, generator=torch.Generator().manual_seed(0))
    preprocessing = meta.get("preprocessing") or {}
    if preprocessing.get("mean") and len(preprocessing["mean"]) == channels:
        mean, std = (torch.tensor(preprocessing[key]).view(1, -1, 1, 1) for key in ("mean", "std"))
        images = (images - mean) / std
    return images


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


def write_onnx(meta: dict[str, Any], encoder: nn.Module, path: Path, image_size: int) -> None:
    """Export with dynamic height and width if the network runs at twice the size in PyTorch and in onnxruntime
    alike, else with them fixed at ``image_size`` (said in a warning); checked against PyTorch either way."""
    import onnx
    import onnxruntime

    def run(images: Tensor) -> Tensor:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"images": images.numpy()})[0])

    images, larger = check_images(meta, image_size), check_images(meta, 2 * image_size)
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
            check_features("ONNX", run, expected, images)
            assert expected_larger is not None
            check_features("ONNX", run, expected_larger, larger)
        except Exception:  # e.g. adaptive pooling to 6x6 (AlexNet, VGG) has no dynamic-size ONNX operator
            dynamic = False
    if not dynamic:
        warnings.warn(
            f"The ONNX encoder {str(path)!r} takes {image_size}x{image_size} images only: its height and width cannot "
            "be dynamic in ONNX (adaptive pooling to a grid other than 1x1, or a network of one input size)",
            stacklevel=3,
        )
        _onnx_export(_fixed_size_pooling(encoder, images), path, images[:1], dynamic_size=False)
        check_features("ONNX", run, expected, images)
    model = onnx.load(str(path))
    onnx_meta = {**meta, "onnx_image_size": None if dynamic else image_size}
    onnx.helper.set_model_props(model, {CHECKPOINT_KEY: json.dumps(onnx_meta)})
    onnx.save(model, str(path))
