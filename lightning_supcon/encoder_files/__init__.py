"""Encoder files: reading an encoder out of a checkpoint (:mod:`.read`), loading any file the project writes into a
ready encoder (:mod:`.load`), and saving/exporting encoders in every format (:mod:`.export`, also the command
``lightning-supcon-export``, or ``python -m lightning_supcon.encoder_files``). Imports run one way: ``export`` ->
``load`` -> ``read``."""

from lightning_supcon.encoder_files.export import export_encoder, save_encoder
from lightning_supcon.encoder_files.load import OnnxEncoder, load_encoder
from lightning_supcon.encoder_files.read import load_encoder_checkpoint

__all__ = ["OnnxEncoder", "export_encoder", "load_encoder", "load_encoder_checkpoint", "save_encoder"]
