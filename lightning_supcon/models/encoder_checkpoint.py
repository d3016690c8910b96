"""What a LightningModule's checkpoint records about its encoder, and the check that a checkpoint fits the model.

Every LightningModule of the project writes ``checkpoint["lightning_supcon"] = {"kind", "encoder", "feature_dim",
"in_channels"}`` (read back by :func:`~lightning_supcon.encoder_files.read.load_encoder_checkpoint`), and refuses in
``on_load_checkpoint`` -- before Lightning loads the weights -- a checkpoint of another kind or architecture, with
one line naming both (instead of a long ``load_state_dict`` report of missing and unexpected keys).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from lightning_supcon.encoder_files.read import CHECKPOINT_KEY

_CHECKED = ("kind", "encoder", "feature_dim", "in_channels")


class EncoderCheckpointMixin(pl.LightningModule):
    """Records the encoder in every checkpoint and checks it on load; the module sets the attributes below."""

    checkpoint_kind: str
    encoder_name: str
    feature_dim: int

    def encoder_metadata(self) -> dict[str, Any]:
        """What a checkpoint records about the encoder, under ``checkpoint["lightning_supcon"]``."""
        return {
            "kind": self.checkpoint_kind,
            "encoder": self.encoder_name,
            "feature_dim": self.feature_dim,
            "in_channels": self.hparams.get("in_channels"),
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
        if all(saved.get(key) in (None, own[key]) or own[key] is None for key in _CHECKED):
            return
        trainer = self._trainer
        path = getattr(trainer, "ckpt_path", None) if trainer is not None else None
        name = f"checkpoint {str(path)!r}" if path else "the checkpoint"
        raise ValueError(
            f"{name} holds a {saved.get('kind')} model with encoder {saved.get('encoder')!r} "
            f"(feature_dim={saved.get('feature_dim')}, in_channels={saved.get('in_channels')}), this model is a "
            f"{own['kind']} model with encoder {own['encoder']!r} (feature_dim={own['feature_dim']}, "
            f"in_channels={own['in_channels']}): give a checkpoint of this experiment, or a config that matches it."
        )
