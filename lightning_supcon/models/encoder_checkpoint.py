"""What a LightningModule's checkpoint records about its encoder, and the check that a checkpoint fits the model.

Every LightningModule of the project writes ``checkpoint["lightning_supcon"] = {"kind", "encoder", "feature_dim",
"in_channels", "encoder_args", "preprocessing"}`` (read back by
:func:`~lightning_supcon.encoder_files.read.load_encoder_checkpoint`): ``encoder_args`` is how to rebuild the encoder
(:func:`~lightning_supcon.nets.encoders.encoder_spec`, ``None`` for a custom module) and ``preprocessing`` the inputs
it was trained on (:func:`data_preprocessing`, ``None`` without a DataModule). It refuses in
``on_load_checkpoint`` -- before Lightning loads the weights -- a checkpoint of another kind or architecture, with
one line naming both (instead of a long ``load_state_dict`` report of missing and unexpected keys), and says in one
warning line when the running data's preprocessing (image size, mean, std, channels) differs from the recorded one.
"""

from __future__ import annotations

import sys
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

from lightning_supcon.encoder_files.read import CHECKPOINT_KEY
from lightning_supcon.nets.encoders import encoder_spec

__all__ = ["EncoderCheckpointMixin", "data_preprocessing", "preprocessing_mismatch", "warn_preprocessing"]

_CHECKED = ("kind", "encoder", "feature_dim", "in_channels")


def data_preprocessing(datamodule: object) -> dict[str, Any] | None:
    """The inputs a model trained on ``datamodule`` expects: ``{"mean", "std", "in_channels", "image_size", "resize"}``.

    The contract is the public attributes every :class:`~lightning_supcon.data.MultiViewDataModule` has: ``mean``
    and ``std`` (per channel, of pixels in ``[0, 1]``; an ``"auto"`` statistic is measured when read), ``in_channels``
    and ``image_size`` (the side of the square evaluation images), and, optionally, ``resize`` (the shorter side
    images are resized to before the centre ``image_size`` crop, :class:`~lightning_supcon.data.ImageDataModule`).
    An exported encoder reads ``(x - mean) / std`` of such ``(B, in_channels, image_size, image_size)`` images.

    Args:
        datamodule: The trainer's DataModule, or ``None``.

    Returns:
        The preprocessing as plain JSON values, or ``None`` for a DataModule without those attributes (or none).

    Example:
        >>> from lightning_supcon.data import DigitsDataModule
        >>> data_preprocessing(DigitsDataModule(image_size=16))
        {'mean': [0.3054], 'std': [0.3186], 'in_channels': 1, 'image_size': 16, 'resize': None}
    """
    try:
        mean, std = datamodule.mean, datamodule.std  # type: ignore[attr-defined]
        in_channels, image_size = datamodule.in_channels, datamodule.image_size  # type: ignore[attr-defined]
    except AttributeError:
        return None
    resize = getattr(datamodule, "resize", None)
    return {
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "in_channels": int(in_channels),
        "image_size": int(image_size),
        "resize": None if resize is None else int(resize),
    }


_COMPARED = ("image_size", "in_channels", "mean", "std", "resize")


def preprocessing_mismatch(saved: object, current: dict[str, Any] | None) -> str | None:
    """What differs between the preprocessing a model was trained with and the running data's, as ``"image_size
    32 -> 8"`` (``None`` when they agree or either is unknown). A model evaluated on other inputs than it was trained
    on scores lower for no fault of its own (a digits probe: 0.392 at another image size instead of 0.994).

    Example:
        >>> preprocessing_mismatch({"image_size": 32, "mean": [0.5]}, {"image_size": 8, "mean": [0.5]})
        'image_size 32 -> 8'
    """
    if not isinstance(saved, dict) or current is None:
        return None
    changed = [
        f"{key} {saved[key]} -> {current[key]}"
        for key in _COMPARED
        if saved.get(key) is not None and current.get(key) is not None and saved[key] != current[key]
    ]
    return ", ".join(changed) or None


def warn_preprocessing(source: str, saved: object, datamodule: object) -> None:
    """One warning line on rank zero when ``source``'s recorded preprocessing differs from ``datamodule``'s."""
    changed = preprocessing_mismatch(saved, data_preprocessing(datamodule))
    if changed:
        _warn_line(
            f"warning: {source} was trained on other inputs than this run's data gives ({changed}): its metrics "
            "here are not the trained model's; set the data options it was trained with"
        )


@rank_zero_only
def _warn_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class EncoderCheckpointMixin(pl.LightningModule):
    """Records the encoder in every checkpoint and checks it on load; the module sets the attributes below."""

    checkpoint_kind: str
    encoder_name: str
    feature_dim: int
    encoder: nn.Module

    def encoder_metadata(self) -> dict[str, Any]:
        """What a checkpoint records about the encoder, under ``checkpoint["lightning_supcon"]``: its kind, name,
        feature size and channels (checked on load), how to rebuild it and the preprocessing of its inputs."""
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        return {
            "kind": self.checkpoint_kind,
            "encoder": self.encoder_name,
            "feature_dim": self.feature_dim,
            "in_channels": self.hparams.get("in_channels"),
            "encoder_args": encoder_spec(self.encoder),
            "preprocessing": data_preprocessing(datamodule),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.encoder_metadata()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another kind of model or another encoder, before its weights are loaded.

        Raises:
            ValueError: Naming the checkpoint's model and encoder, and this model's.
        """
        saved = checkpoint.get(CHECKPOINT_KEY)
        if not isinstance(saved, dict):
            return
        own = self.encoder_metadata()
        trainer = self._trainer
        path = getattr(trainer, "ckpt_path", None) if trainer is not None else None
        name = f"checkpoint {str(path)!r}" if path else "the checkpoint"
        if all(saved.get(key) in (None, own[key]) or own[key] is None for key in _CHECKED):
            warn_preprocessing(name, saved.get("preprocessing"), getattr(trainer, "datamodule", None))
            return
        raise ValueError(
            f"{name} holds a {saved.get('kind')} model with encoder {saved.get('encoder')!r} "
            f"(feature_dim={saved.get('feature_dim')}, in_channels={saved.get('in_channels')}), this model is a "
            f"{own['kind']} model with encoder {own['encoder']!r} (feature_dim={own['feature_dim']}, "
            f"in_channels={own['in_channels']}): give a checkpoint of this experiment, or a config that matches it."
        )
