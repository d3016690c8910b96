"""Encoders by library name: ``"torchvision/<name>"`` (``torchvision.models.get_model``) and ``"timm/<name>"``
(``timm.create_model``), with the classifier removed, any input channels, the CIFAR stem for ResNets, and pretrained
weights from the library's cache or from a local file.

timm is optional: ``pip install 'lightning-supcon[timm]'``. Weights files are read without running code
(:mod:`lightning_supcon.nets.weights`).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
import torchvision
from torch import Tensor, nn

from lightning_supcon.nets.network_surgery import adapt_first_conv, remove_classifier, set_cifar_stem
from lightning_supcon.nets.weights import load_weights
from lightning_supcon.utils.checks import check_positive_integers
from lightning_supcon.utils.files import first_line

__all__ = ["AUX_OUTPUTS", "FAMILIES", "Backbone", "closest_names", "offline"]

TIMM_EXTRA = "pip install 'lightning-supcon[timm]'"
AUX_OUTPUTS: dict[str, tuple[str, ...]] = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}
"""torchvision networks with auxiliary classifiers, which change the output in train mode: they are removed
(``aux_logits`` off, these submodules ``None``), so the output is ``(B, feature_dim)`` in both modes, and their keys
in a full weights file are ignored."""
_TRANSFORM_INPUT = ("googlenet", "inception_v3")  # their pretrained weights switch on `transform_input` (3 channels)
# A network without its classifier, its feature size, and the classifier's keys a full weights file still holds.
_Built = tuple[nn.Module, int, list[str]]


def offline() -> bool:
    """Whether downloads are off: ``HF_HUB_OFFLINE=1`` (Hugging Face's switch, which timm follows; honoured here
    for torchvision's weights too)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:  # huggingface_hub reads the variable once, at import: its constant is what timm's downloads obey
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def closest_names(name: str, names: list[str], n: int = 3) -> str:
    """``"; closest: 'a', 'b'"`` for the entries of ``names`` nearest to ``name`` (empty if none is near).

    Example:
        >>> closest_names("resnt18", ["resnet18", "resnet34", "vgg11"])
        "; closest: 'resnet18', 'resnet34'"
    """
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.6)
    return f"; closest: {', '.join(repr(c) for c in close)}" if close else ""


def _torchvision(name: str, in_channels: int, pretrained: bool, cifar_stem: bool, options: dict[str, Any]) -> _Built:
    names = torchvision.models.list_models(module=torchvision.models)  # classification networks only
    if name not in names:
        other = name in torchvision.models.list_models()
        raise ValueError(
            f"torchvision/{name} is not a classification network (detection, segmentation, video or quantized "
            "networks have no (B, C, H, W) -> (B, D) form); Backbone takes torchvision.models.list_models("
            f"module=torchvision.models){closest_names(name, names)}"
            if other
            else f"Unknown torchvision model {name!r} (torchvision.models.list_models()){closest_names(name, names)}"
        )
    if name in AUX_OUTPUTS and options.get("aux_logits"):
        raise ValueError(
            f"torchvision/{name} with `aux_logits: true` returns auxiliary outputs in train mode, not (B, D) "
            "features: leave `aux_logits` out (the auxiliary classifiers are removed from encoders)"
        )
    weights = None
    if pretrained:
        weights = torchvision.models.get_model_weights(name).DEFAULT  # type: ignore[attr-defined]
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        if offline() and not cached.is_file():
            raise ValueError(
                f"The pretrained weights of torchvision/{name} are not in torch's cache ({cached}) and HF_HUB_OFFLINE "
                "is set: download them once where there is network (TORCH_HOME sets the cache) or give `weights: PATH`"
            )
    try:
        net = torchvision.models.get_model(name, weights=weights, **options)
    except (URLError, OSError) as err:
        raise ValueError(
            f"Could not download the pretrained weights of torchvision/{name}: {first_line(err)}; put them in "
            f"torch's cache ({torch.hub.get_dir()}/checkpoints) or give `weights: PATH`"
        ) from None
    if name in _TRANSFORM_INPUT and in_channels != 3:
        net.transform_input = False  # it re-normalises R, G and B one by one: meaningless for other channels
    aux_keys = _remove_aux_outputs(net, AUX_OUTPUTS.get(name, ()))
    feature_dim, removed = remove_classifier(net)
    removed += aux_keys
    if cifar_stem:
        set_cifar_stem(net)
    adapt_first_conv(net, in_channels)
    return net, feature_dim, removed


def _remove_aux_outputs(net: nn.Module, names: tuple[str, ...]) -> list[str]:
    """Turn the auxiliary classifiers ``names`` off (torchvision's ``aux_logits``); their state-dict keys."""
    keys = []
    for name in names:
        aux = getattr(net, name, None)
        if isinstance(aux, nn.Module):
            keys += [f"{name}.{key}" for key in aux.state_dict()]
        setattr(net, name, None)
    if names:
        net.aux_logits = False  # type: ignore[assignment]
    return keys


HUB_PROBE_TIMEOUT = 3.0
"""Seconds :func:`hub_reachable` waits for a TCP connection to the Hugging Face endpoint."""


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to the Hugging Face endpoint (``HF_ENDPOINT``, default ``huggingface.co:443``) opens
    within ``timeout`` seconds: one try, where huggingface_hub itself retries for about a minute without network."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    endpoint = urlsplit(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=timeout).close()
    except OSError:  # socket.timeout and name-resolution errors are OSErrors
        return False
    return True


def _timm_weights_cached(name: str, options: dict[str, Any]) -> str | None:
    """Where timm would fetch the pretrained weights of ``name`` from, if they are not in a local cache; else None.

    timm reads them from the Hugging Face hub (``hf_hub_id`` of its pretrained config) or a URL (torch's hub
    cache); a local ``file`` (``options={"pretrained_cfg_overlay": {"file": PATH}}``) needs no cache. Checked
    before timm is called, because with no network huggingface_hub retries for about a minute before failing.
    """
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    try:
        found = get_pretrained_cfg(name)
    except RuntimeError as err:  # an unknown pretrained tag
        raise ValueError(f"timm/{name}: {first_line(err)}") from None
    cfg: dict[str, Any] = found.to_dict() if found is not None else {}
    cfg.update(options.get("pretrained_cfg") or {})
    cfg.update(options.get("pretrained_cfg_overlay") or {})
    if cfg.get("file") or cfg.get("state_dict") is not None:
        return None
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        files = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
        if any(isinstance(try_to_load_from_cache(hub_id, file), str) for file in files):
            return None
        return f"the Hugging Face cache (HF_HOME) has no {hub_id} (`hf download {hub_id}` where there is network)"
    url = cfg.get("url")
    if url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        return None if cached.is_file() else f"torch's cache has no {cached} (download {url} there)"
    return f"timm has no pretrained weights for {name!r}"


def _timm(name: str, in_channels: int, pretrained: bool, cifar_stem: bool, options: dict[str, Any]) -> _Built:
    try:
        import timm
    except ImportError:
        raise ImportError(f"`timm/{name}` needs timm: {TIMM_EXTRA}") from None
    if not timm.is_model(name):
        raise ValueError(f"Unknown timm model {name!r} (timm.list_models()){closest_names(name, timm.list_models())}")
    missing = _timm_weights_cached(name, options) if pretrained else None
    if missing is not None and (offline() or not hub_reachable()):  # else timm downloads them
        why = "HF_HUB_OFFLINE is set" if offline() else "the Hugging Face hub cannot be reached"
        raise ValueError(
            f"The pretrained weights of timm/{name} are not cached locally and {why}: {missing}; or give "
            "`weights: PATH`"
        )
    try:
        net = timm.create_model(name, pretrained=pretrained, num_classes=0, in_chans=in_channels, **options)
    except (OSError, RuntimeError, URLError) as err:  # the hub's offline / not-found errors are OSErrors
        if not pretrained:
            raise
        raise ValueError(
            f"timm could not load the pretrained weights of timm/{name}: {first_line(err)}; with no network they "
            "must be in the Hugging Face cache (HF_HOME), or give `weights: PATH`"
        ) from None
    feature_dim = getattr(net, "head_hidden_size", None) or _dry_run_dim(net)
    pretrained_cfg: dict[str, Any] = getattr(net, "pretrained_cfg", None) or {}
    classifier = pretrained_cfg.get("classifier") or ()
    removed = [
        f"{c}.{p}" for c in ([classifier] if isinstance(classifier, str) else classifier) for p in ("weight", "bias")
    ]
    if cifar_stem:
        set_cifar_stem(net)
    return net, int(feature_dim), removed


def _dry_run_dim(net: nn.Module) -> int:
    """The feature size of a timm network without ``head_hidden_size`` (timm < 1.0): one forward pass."""
    pretrained_cfg: dict[str, Any] = getattr(net, "pretrained_cfg", None) or {}
    size = tuple(pretrained_cfg.get("input_size", (3, 224, 224)))
    with torch.no_grad():
        out: Tensor = net.eval()(torch.zeros(1, *size))
    net.train()
    return int(out.shape[-1])


FAMILIES: dict[str, Callable[[str, int, bool, bool, dict[str, Any]], _Built]] = {
    "torchvision": _torchvision,
    "timm": _timm,
}
"""Builders by library: ``name, in_channels, pretrained, cifar_stem, options -> (network, feature_dim, removed)``."""


def fixed_image_size(net: nn.Module) -> tuple[int, int] | None:
    """The one input size ``(H, W)`` a network accepts, or ``None`` when it takes any: timm's ViTs check their
    ``patch_embed.img_size`` (``strict_img_size``, unless ``dynamic_img_size``), torchvision's check ``image_size``.

    Example:
        >>> import torchvision
        >>> fixed_image_size(torchvision.models.get_model("vit_b_16")), fixed_image_size(nn.Linear(2, 2))
        ((224, 224), None)
    """
    embed = getattr(net, "patch_embed", None)
    size = getattr(embed, "img_size", None)
    if size is not None and getattr(embed, "strict_img_size", False) and not getattr(embed, "dynamic_img_size", False):
        return (int(size[0]), int(size[1]))
    side = getattr(net, "image_size", None)  # torchvision's VisionTransformer asserts it in _process_input
    if isinstance(side, int) and type(net).__name__ == "VisionTransformer":
        return (side, side)
    return None


class Backbone(nn.Module):
    """A torchvision or timm network by name, as an encoder: images ``(B, C, H, W)`` to features ``(B, feature_dim)``.

    The classifier is removed (torchvision: its last ``nn.Linear`` becomes ``nn.Identity``; timm:
    ``num_classes=0``), so the output is the pooled features the classifier read; ``feature_dim`` is its size.
    The network is ``self.net``: its state-dict keys are the library's under ``net.``. ``self.init_args`` holds the
    arguments that shape the network (``name``, ``in_channels``, ``cifar_stem``, ``options``; not ``pretrained`` or
    ``weights``, which saved weights supersede): encoder files record them to rebuild the same network.

    The output is ``(B, feature_dim)`` in train and eval mode alike: torchvision's GoogLeNet and Inception v3 are
    built with ``aux_logits=False`` (:data:`AUX_OUTPUTS`), and their ``transform_input`` (which re-normalises three
    RGB channels) is off for other channel counts; only classification networks are accepted.

    Args:
        name: ``"torchvision/<name>"`` (any name of ``torchvision.models.list_models()``, e.g.
            ``"torchvision/resnet50"``, ``"torchvision/convnext_tiny"``, ``"torchvision/vit_b_16"``) or
            ``"timm/<name>"`` (any ``timm.list_models()`` name, e.g. ``"timm/resnet18"``, ``"timm/convnext_atto"``,
            ``"timm/vit_tiny_patch16_224"``; needs ``pip install 'lightning-supcon[timm]'``).
        in_channels: Channels of the input images. timm: ``in_chans``; torchvision: the first conv is replaced and
            its (pretrained) RGB weights adapted, summed over R, G, B for one channel
            (:func:`~lightning_supcon.nets.network_surgery.adapt_first_conv`).
        pretrained: Load the library's default pretrained weights with the library's own loading (torchvision:
            ``weights="DEFAULT"`` from torch's hub cache, ``TORCH_HOME``, downloaded when missing unless
            ``HF_HUB_OFFLINE=1``; timm: ``pretrained=True`` from the Hugging Face cache, ``HF_HOME``, which must
            hold them already: fetch them once with ``hf download timm/<name>.<tag>``, else a one-line error at
            once instead of a minute of hub retries).
        weights: A local ``.pt``/``.pth``/``.safetensors`` state dict of the network, loaded strictly after it is
            built (so saved with the channels and stem asked for: unlike ``pretrained``, an RGB file's first conv
            is not adapted to other channels or the CIFAR stem); wrapper prefixes (``module.``, ``encoder.``,
            ``backbone.``, ``model.``, ``net.``) are stripped and the classifier's keys ignored.
        cifar_stem: For ResNet-family networks: replace the 7x7 stride-2 conv and max-pool by one 3x3 stride-1 conv
            (for 32 px images; :func:`~lightning_supcon.nets.network_surgery.set_cifar_stem`).
        options: More keyword arguments of ``get_model``/``create_model``, e.g. ``{"drop_path_rate": 0.1}``,
            ``{"zero_init_residual": true}`` or ``{"img_size": 32}`` for a timm ViT.

    Raises:
        ValueError: One line, for an unknown library or network (naming the closest names), ``pretrained`` with
            ``weights``, pretrained weights that cannot be had, a weights file that does not fit, or
            ``cifar_stem`` on a network without a ResNet stem.
        ImportError: For ``timm/`` names without timm.
        FileNotFoundError: If ``weights`` is not a file.

    Example:
        >>> encoder = Backbone("torchvision/resnet18", in_channels=1, cifar_stem=True)
        >>> encoder(torch.randn(2, 1, 32, 32)).shape, encoder.feature_dim
        (torch.Size([2, 512]), 512)
    """

    def __init__(
        self,
        name: str,
        in_channels: int = 3,
        pretrained: bool = False,
        weights: str | None = None,
        cifar_stem: bool = False,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        family, _, model_name = name.partition("/")
        if family not in FAMILIES or not model_name:
            raise ValueError(
                f"Expected argument `name` to be 'torchvision/<model>' or 'timm/<model>', but got {name!r}"
                f"{closest_names(name, [f'{f}/{model_name or name}' for f in FAMILIES])}"
            )
        check_positive_integers(in_channels=in_channels)
        if pretrained and weights is not None:
            raise ValueError(f"Give `pretrained: true` or `weights: PATH` for {name!r}, not both")
        self.encoder_name, self.in_channels, self.cifar_stem = name, in_channels, cifar_stem
        self.init_args: dict[str, Any] = {
            "name": name,
            "in_channels": in_channels,
            "cifar_stem": cifar_stem,
            "options": dict(options or {}),
        }
        net, self.feature_dim, removed = FAMILIES[family](
            model_name, in_channels, pretrained, cifar_stem, options or {}
        )
        if weights is not None:
            load_weights(net, weights, ignore=removed)
        self.net = net
        self.image_size = fixed_image_size(net)

    def forward(self, x: Tensor) -> Tensor:
        """Encode ``x`` of shape ``(B, in_channels, H, W)`` into ``(B, feature_dim)``."""
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():
            self._check_size(x)
        out: Tensor = self.net(x)
        return out

    @torch.jit.unused
    def _check_size(self, x: Tensor) -> None:
        """One line, instead of the network's assertion deep in a traceback, for an image of another size than a
        fixed-size network (a ViT's patch embedding) takes."""
        if self.image_size is not None and tuple(x.shape[-2:]) != self.image_size:
            height, width = self.image_size
            raise ValueError(
                f"{self.encoder_name} takes {height}x{width} images, but got {x.shape[-2]}x{x.shape[-1]}: build it "
                f"for your size (`options: {{img_size: {x.shape[-1]}}}` for timm, `image_size` for torchvision) or "
                f"set the data's image_size to {width}"
            )
