"""Load an encoder from any of the project's files into a ready ``nn.Module`` in eval mode: :func:`load_encoder`.

The kind of file is read from its content (and the ``.onnx`` suffix, as ONNX has no magic number):

- a ``torch.save`` file: an exported encoder (``.pt``) or a SupCon Lightning checkpoint (``.ckpt``), read with
  ``weights_only=True`` unless ``trust_checkpoint`` (:func:`~lightning_supcon.encoder_files.read.read_checkpoint_file`);
- ``.safetensors``: a state dict and the ``lightning_supcon`` metadata (JSON string); no code, no pickle;
- a TorchScript archive (``torch.jit.save``, e.g. ``.ts``): loaded with ``torch.jit.load``; it runs the TorchScript
  program stored in it (TorchScript, not Python), as any TorchScript model does;
- ``.onnx``: wrapped in :class:`OnnxEncoder`, which runs it with onnxruntime on the CPU.

Weights-only files are rebuilt into the project's encoder (:class:`~lightning_supcon.nets.SmallCNN` or
:class:`~lightning_supcon.nets.Backbone`) from the constructor arguments the metadata records (``encoder_args``:
name, channels, stem, options such as a ViT's ``img_size``); files written before ``encoder_args`` existed are
rebuilt from the encoder's name with the architecture read from the weights' shapes (stem, widths).

Every loaded encoder has ``preprocessing``: the inputs it was trained on (``{"mean", "std", "in_channels",
"image_size", "resize"}``, see :func:`~lightning_supcon.models.encoder_checkpoint.data_preprocessing`), or ``None``
when the file does not record them. ``load_encoder(path, normalize=True)`` puts :class:`Normalize` in front, so the
encoder takes images in ``[0, 1]``.
"""

from __future__ import annotations

import json
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_supcon.encoder_files.read import CHECKPOINT_KEY, load_encoder_checkpoint
from lightning_supcon.nets.backbones import FAMILIES, Backbone
from lightning_supcon.nets.encoders import ENCODERS, SmallCNN, rebuild_encoder
from lightning_supcon.utils.files import FileReadError, MissingFileError, first_line, read_safetensors

__all__ = ["Normalize", "OnnxEncoder", "build_encoder_from_weights", "load_encoder"]

_SMALL_CNN = ("small_cnn", "SmallCNN")


def _backbone(name: str, meta: dict[str, Any], state_dict: dict[str, Tensor]) -> Backbone:
    """The library network ``name`` for these weights: the CIFAR stem when its 3x3 ``conv1`` says so."""
    in_channels = int(meta.get("in_channels") or 3)
    encoder = Backbone(name, in_channels=in_channels)
    conv1 = getattr(encoder.net, "conv1", None)
    saved = state_dict.get("net.conv1.weight")
    if isinstance(conv1, nn.Conv2d) and saved is not None and saved.shape[-1] == 3 and conv1.kernel_size[-1] != 3:
        encoder = Backbone(name, in_channels=in_channels, cifar_stem=True)
    return encoder


def build_encoder_from_weights(meta: dict[str, Any], state_dict: dict[str, Tensor]) -> nn.Module:
    """The project encoder the metadata records, rebuilt, its weights loaded, in eval mode.

    Args:
        meta: ``lightning_supcon`` metadata. ``encoder_args`` (``{"class", "init_args"}``,
            :func:`~lightning_supcon.nets.encoders.encoder_spec`) rebuilds the encoder exactly; without it (older
            files) ``encoder`` is ``"small_cnn"``/``"SmallCNN"``, ``"resnet<depth>"`` or a library name
            (``"torchvision/<name>"``, ``"timm/<name>"``; ``in_channels`` from the metadata), its stem and widths read
            from the weights' shapes and its options unknown.
        state_dict: The encoder's weights.

    Returns:
        The encoder with the weights loaded (strictly), in eval mode.

    Raises:
        ValueError: For another encoder (a custom module: build it and ``load_state_dict`` yourself, or export it
            as TorchScript/ONNX from a live model), or weights that do not fit.

    Example:
        >>> meta = {"encoder": "small_cnn"}
        >>> build_encoder_from_weights(meta, SmallCNN(in_channels=1, width=8, feature_dim=16).state_dict()).feature_dim
        16
    """
    encoder = _rebuild(meta, state_dict)
    encoder.preprocessing = meta.get("preprocessing")  # type: ignore[assignment]
    return encoder.eval()


def _rebuild(meta: dict[str, Any], state_dict: dict[str, Tensor]) -> nn.Module:
    name = str(meta.get("encoder"))
    spec = meta.get("encoder_args")
    try:
        if isinstance(spec, dict):
            encoder: nn.Module = rebuild_encoder(spec)
        elif name in _SMALL_CNN:
            first, last = state_dict["features.0.weight"], state_dict["features.8.weight"]
            encoder = SmallCNN(in_channels=first.shape[1], width=first.shape[0], feature_dim=last.shape[0])
        elif name in ENCODERS:  # resnetN: torchvision's, with the stem its weights have
            encoder = _backbone(f"torchvision/{name}", meta, state_dict)
        elif name.partition("/")[0] in FAMILIES:
            encoder = _backbone(name, meta, state_dict)
        else:
            raise ValueError(
                f"Cannot rebuild encoder {name!r} from its weights: only the project's SmallCNN, resnetN and library "
                "backbones ('torchvision/<name>', 'timm/<name>') can be; "
                "build the module yourself and load_state_dict, or load a TorchScript/ONNX export"
            )
        encoder.load_state_dict(state_dict)
    except (KeyError, RuntimeError) as err:
        raise ValueError(f"The weights do not fit encoder {name!r}: {first_line(err)}") from None
    return encoder


class Normalize(nn.Module):
    """An encoder that takes images in ``[0, 1]``: ``encoder((x - mean) / std)``, the normalisation it was trained with.

    Args:
        encoder: The encoder, ``(B, C, H, W)`` normalised images to ``(B, D)`` features.
        mean: Per-channel mean (``C`` values).
        std: Per-channel standard deviation (``C`` values).

    Shape:
        - input: ``(B, C, H, W)`` float images in ``[0, 1]``.
        - output: ``(B, D)``, the encoder's features.

    Raises:
        ValueError: At construction, for ``mean`` and ``std`` of different lengths or a non-positive ``std``; when
            called, for images with another number of channels.

    Example:
        >>> encoder = Normalize(nn.Flatten(), mean=[0.5], std=[0.25])
        >>> encoder(torch.tensor([[[[0.0, 1.0]]]]))
        tensor([[-2.,  2.]])
    """

    mean: Tensor
    std: Tensor

    def __init__(self, encoder: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or not mean or min(std) <= 0:
            raise ValueError(f"Expected `mean` and `std` of equal length with std > 0, but got {mean} and {std}")
        self.encoder = encoder
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.feature_dim = getattr(encoder, "feature_dim", None)
        self.preprocessing = getattr(encoder, "preprocessing", None)

    def forward(self, x: Tensor) -> Tensor:
        """Features ``(B, D)`` of images ``(B, C, H, W)`` in ``[0, 1]``."""
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"Expected images (B, {self.mean.shape[1]}, H, W) in [0, 1], but got shape {tuple(x.shape)}"
            )
        out: Tensor = self.encoder((x - self.mean) / self.std)
        return out


class OnnxEncoder(nn.Module):
    """An ONNX encoder run by onnxruntime (CPU) behind the ``nn.Module`` interface: ``(B, C, H, W) -> (B, D)``.

    Inference only (no gradients); inputs are copied to the CPU as float32 and the features returned on the
    input's device. ``meta`` holds the ``lightning_supcon`` metadata of the file (empty if it had none).

    Args:
        path: An ``.onnx`` file with one input and one output.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        import onnxruntime

        self.path = str(path)
        self.session = onnxruntime.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta: dict[str, Any] = json.loads(props[CHECKPOINT_KEY]) if CHECKPOINT_KEY in props else {}
        self.preprocessing: dict[str, Any] | None = self.meta.get("preprocessing")
        if self.meta.get("feature_dim") is not None:
            self.feature_dim = int(self.meta["feature_dim"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: Tensor) -> Tensor:
        """Features ``(B, D)`` of images ``(B, C, H, W)``."""
        (features,) = self.session.run(None, {self.input_name: x.detach().to("cpu", torch.float32).numpy()})
        return torch.from_numpy(features).to(x.device)


def _kind(path: Path) -> str:
    """``"onnx"``, ``"safetensors"``, ``"torchscript"``, ``"torch"`` (a ``torch.save`` zip) or ``"unknown"``."""
    if path.suffix == ".onnx":
        return "onnx"
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < path.stat().st_size:
        return "safetensors"  # an 8-byte little-endian header size, then the JSON header
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(name.endswith("constants.pkl") or "/code/" in name for name in names):
            return "torchscript"
        return "torch" if any(name.endswith("data.pkl") for name in names) else "unknown"
    return "unknown"


def _load_safetensors(path: Path) -> nn.Module:
    state_dict, header = read_safetensors(path, what="encoder file")
    if CHECKPOINT_KEY not in header:
        raise FileReadError(f"{str(path)!r} is a safetensors file without {CHECKPOINT_KEY!r} metadata")
    return build_encoder_from_weights(json.loads(header[CHECKPOINT_KEY]), state_dict)


def load_encoder(path: str | Path, trust_checkpoint: bool = False, normalize: bool = False) -> nn.Module:
    """A ready encoder in eval mode from any of the project's files: ``images (B, C, H, W) -> features (B, D)``.

    The encoder's ``preprocessing`` attribute holds the inputs it was trained on (see the module docstring):
    images of ``preprocessing["image_size"]`` px normalised as ``(x - mean) / std``; ``normalize=True`` applies
    that normalisation itself (:class:`Normalize`), so the encoder takes images in ``[0, 1]``.

    Args:
        path: An exported encoder (``.pt``, ``.safetensors``, TorchScript ``.ts``, ``.onnx``: see
            :mod:`lightning_supcon.encoder_files.export`) or a SupCon Lightning checkpoint (``.ckpt``).
        trust_checkpoint: Unpickle a ``torch.save`` file in full when it needs it (files you trust only).
        normalize: Put the recorded normalisation in front of the encoder: it then takes images in ``[0, 1]``.

    Returns:
        The encoder in eval mode (an :class:`OnnxEncoder` for ``.onnx``; a :class:`Normalize` with ``normalize``).

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: One line naming the file, for a file of another kind, a checkpoint of another model, weights
            of an encoder that cannot be rebuilt, or ``normalize`` for a file that records no preprocessing.

    Example:
        >>> import tempfile
        >>> from lightning_supcon.encoder_files import save_encoder
        >>> from lightning_supcon.models import OnlineEval, SupConModule
        >>> model = SupConModule(encoder="small_cnn", in_channels=1, online=OnlineEval(knn_k=0))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = save_encoder(model, f"{tmp}/encoder.pt")
        ...     encoder = load_encoder(path)
        >>> encoder(torch.zeros(2, 1, 16, 16)).shape, encoder.training
        (torch.Size([2, 128]), False)
    """
    path = Path(path)
    encoder = _load(path, trust_checkpoint)
    if not normalize:
        return encoder
    preprocessing = getattr(encoder, "preprocessing", None)
    if not isinstance(preprocessing, dict) or not preprocessing.get("mean") or not preprocessing.get("std"):
        raise ValueError(
            f"{str(path)!r} records no preprocessing (mean, std): it was saved without a DataModule or by an older "
            "version; normalise the images yourself and load it with `normalize=False`"
        )
    return Normalize(encoder, list(preprocessing["mean"]), list(preprocessing["std"])).eval()


def _load(path: Path, trust_checkpoint: bool) -> nn.Module:
    if not path.is_file():
        raise MissingFileError(f"Encoder file {str(path)!r} does not exist (or is not a file).")
    kind = _kind(path)
    if kind == "onnx":
        return OnnxEncoder(path).eval()
    if kind == "safetensors":
        return _load_safetensors(path)
    if kind == "torchscript":
        extra = {f"{CHECKPOINT_KEY}.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still the portable format
            module: nn.Module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        meta = json.loads(extra[f"{CHECKPOINT_KEY}.json"] or "{}")
        module.preprocessing = meta.get("preprocessing")
        return module.eval()
    if kind == "torch":
        meta, state_dict = load_encoder_checkpoint(path, trust_checkpoint)
        try:
            return build_encoder_from_weights(meta, state_dict)
        except ValueError as err:
            raise ValueError(f"{str(path)!r}: {err}") from None
    if path.stat().st_size == 0:
        raise FileReadError(f"Cannot read encoder file {str(path)!r}: the file is empty.")
    raise FileReadError(
        f"Cannot read encoder file {str(path)!r}: not an encoder file of lightning_supcon: expected a torch.save "
        "file (.pt/.ckpt), .safetensors, TorchScript (.ts) or .onnx"
    )
