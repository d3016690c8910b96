"""Stage 2 of [0] on a SupCon encoder: a linear classifier on frozen features, or the encoder fine-tuned with it.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362 (Sec. 3: the
  projection head is dropped and a linear classifier is trained with cross-entropy on the frozen encoder)
- [1] Musgrave et al., A Metric Learning Reality Check, ECCV 2020, https://arxiv.org/abs/2003.08505 (MAP@R)
- [2] Chen et al., Big Self-Supervised Models are Strong Semi-Supervised Learners (SimCLRv2), NeurIPS 2020,
  https://arxiv.org/abs/2006.10029 (fine-tuning the whole pretrained network on a fraction of the labels)

Encoder files are read by :func:`~lightning_supcon.encoder_files.read.load_encoder_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.cli import OptimizerCallable
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor, nn

from lightning_supcon.encoder_files.read import load_encoder_checkpoint
from lightning_supcon.models.cross_entropy import CrossEntropyModule, TrainViews
from lightning_supcon.models.encoder_checkpoint import warn_preprocessing
from lightning_supcon.models.online_eval import OnlineEval
from lightning_supcon.models.optimization import Schedule, decay_groups


@rank_zero_only
def _say(line: str) -> None:
    print(line, flush=True)


class LinearProbeModule(CrossEntropyModule):
    """Stage 2 of [0] on a pretrained SupCon encoder: linear evaluation (frozen, the default) or fine-tuning.

    The encoder is built from ``encoder`` (as in SupConModule) and loaded from ``checkpoint``; a linear classifier
    ``nn.Linear(feature_dim, num_classes)`` is trained on its features with cross-entropy. Training batches follow
    ``train_views`` (default: every view of ``(B, V, ...)`` is a sample; use ``data.n_views: 1``).

    - ``freeze_encoder=True`` (the paper's protocol [0]): the encoder is frozen (``requires_grad=False``) and kept in
      eval mode even while the classifier trains, so its BatchNorm statistics do not move. Only the classifier is
      optimised.
    - ``freeze_encoder=False``: the encoder is fine-tuned with the classifier, as users adapt a pretrained encoder
      to a new task [2]: its weights get gradients and its BatchNorm layers train (batch statistics, running
      statistics updated). ``encoder_lr`` gives it its own learning rate (typically lower than the classifier's).

    Logs what :class:`CrossEntropyModule` logs, and with ``retrieval=True`` the leave-one-out retrieval metrics of
    the encoder features [1] ``val/precision_at_1``, ``val/r_precision``, ``val/map_at_r`` (and ``test/``): they
    score the representation itself, so with a frozen encoder they do not change while the probe trains.

    Args:
        checkpoint: Path of a SupConModule Lightning checkpoint or of an exported encoder (see
            :func:`~lightning_supcon.encoder_files.read.export_encoder`), read with ``torch.load(weights_only=True)``.
            ``None``: no encoder weights here; restore a trained probe (encoder included) with ``--ckpt_path``.
        encoder: The encoder's architecture: the name or module the SupCon model was built with.
        feature_dim: Size of its features (inferred for built-ins).
        in_channels: Image channels (linked from the DataModule by the CLI).
        num_classes: Number of classes (linked from the DataModule by the CLI).
        train_views: See :class:`CrossEntropyModule`.
        multilabel: A multi-label head (see :class:`CrossEntropyModule`), linked from a multi-label DataModule.
        retrieval: Also log Precision@1, R-Precision and MAP@R of the encoder features on the evaluation set.
        optimizer: Any ``torch.optim`` optimiser or LARS, as in :class:`CrossEntropyModule` ([0] trains its
            ImageNet classifier with RMSProp, the CIFAR reference code with SGD); ``None``: SGD, lr 0.1, momentum
            0.9, no weight decay.
        schedule: As in :class:`CrossEntropyModule`.
        trust_checkpoint: Unpickle a ``checkpoint`` that needs it in full, which can run code stored in the file:
            only for files you trust. ``False`` (default): such a file is refused with one error.
        freeze_encoder: ``True`` (default): linear evaluation, the encoder frozen in eval mode; ``False``: fine-tune
            the encoder too, its BatchNorm layers in training mode.
        encoder_lr: With ``freeze_encoder=False``, the encoder's learning rate in a parameter group of its own
            (weights with the optimiser's weight decay, biases and norm parameters without; the schedule applies,
            ``schedule.lr_scaling`` does not, as for other extra groups); ``None``: the optimiser's learning rate,
            scaled with the classifier's.

    Raises:
        FileNotFoundError: If ``checkpoint`` does not exist.
        ValueError: If it is not a SupCon checkpoint, or its encoder differs from ``encoder`` (name, feature size,
            input channels, weight names or shapes); if it is unreadable (empty, truncated, not a torch file) or needs
            full unpickling without ``trust_checkpoint``; when run without ``checkpoint`` nor ``--ckpt_path``; for
            ``encoder_lr`` <= 0, or set with ``freeze_encoder=True``.

    Example:
        >>> probe = LinearProbeModule(encoder="small_cnn", in_channels=1, freeze_encoder=False, encoder_lr=0.01)
        >>> probe.train().encoder.training, all(p.requires_grad for p in probe.encoder.parameters())
        (True, True)
        >>> LinearProbeModule(encoder="small_cnn", in_channels=1).train().encoder.training
        False
    """

    checkpoint_kind = "linear_probe"
    default_lr, default_weight_decay = 0.1, 0.0  # the SGD of ``optimizer=None``

    def __init__(
        self,
        checkpoint: str | None = None,
        encoder: nn.Module | str = "small_cnn",
        feature_dim: int | None = None,
        in_channels: int = 3,
        num_classes: int = 10,
        train_views: TrainViews = "all",
        multilabel: bool = False,
        retrieval: bool = True,
        optimizer: OptimizerCallable | None = None,
        schedule: Schedule = Schedule(),  # frozen: a safe default, and jsonargparse shows its fields in --help
        trust_checkpoint: bool = False,
        freeze_encoder: bool = True,
        encoder_lr: float | None = None,
    ) -> None:
        super().__init__(
            encoder,
            feature_dim,
            in_channels,
            num_classes,
            train_views,
            multilabel=multilabel,
            # retrieval's one home: online evaluation; no OOD metrics: they rate the encoder, which stage 1 logs
            online=OnlineEval(probe=False, knn_k=0, retrieval=retrieval, ood_k=0),
            optimizer=optimizer,
            schedule=schedule,
        )
        if encoder_lr is not None and (freeze_encoder or not encoder_lr > 0):
            raise ValueError(
                f"Expected `encoder_lr` > 0 with `freeze_encoder=False` (a frozen encoder has no learning rate), but "
                f"got encoder_lr={encoder_lr} with freeze_encoder={freeze_encoder}."
            )
        self.checkpoint = checkpoint
        self._said_encoder = False
        self.freeze_encoder = freeze_encoder
        self.encoder_lr = encoder_lr
        self._encoder_meta: dict[str, Any] = {}
        if checkpoint is not None:
            meta, state_dict = load_encoder_checkpoint(checkpoint, trust_checkpoint=trust_checkpoint)
            self._check_encoder(checkpoint, meta, state_dict)
            self.encoder.load_state_dict(state_dict)
            self._encoder_meta = meta
        if freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def _require_weights(self) -> None:
        """Refuse to run without encoder weights: neither ``checkpoint`` nor a probe checkpoint (``--ckpt_path``).

        Raises:
            ValueError: When both are missing.
        """
        if self.checkpoint is None and self.trainer.ckpt_path is None:
            raise ValueError(
                "LinearProbeModule has no encoder weights: give `checkpoint` (the SupCon checkpoint or exported "
                "encoder to train a probe on) or `--ckpt_path` (a trained probe's own checkpoint)."
            )

    def _say_encoder(self) -> None:
        """One line: which file (which run, a link resolved) the encoder came from; one warning line if it was
        trained on other inputs than this run's data gives; once per model (fit's sanity check, validation and test
        would repeat it)."""
        if self.checkpoint is None or self._said_encoder:
            return
        self._said_encoder = True
        source = Path(self.checkpoint).resolve()
        meta = self._encoder_meta
        _say(f"Encoder weights from {source} (a {meta.get('kind')} model, encoder {meta.get('encoder')!r})")
        warn_preprocessing(
            f"the encoder of {str(source)!r}", meta.get("preprocessing"), getattr(self.trainer, "datamodule", None)
        )

    def on_fit_start(self) -> None:
        self._require_weights()
        self._say_encoder()
        super().on_fit_start()

    def on_validation_start(self) -> None:
        self._require_weights()
        if self.trainer.ckpt_path is None and not self.trainer.training:  # validate: the encoder file's weights
            self._say_encoder()

    def on_test_start(self) -> None:
        self._require_weights()
        if self.trainer.ckpt_path is None:
            self._say_encoder()

    def on_predict_start(self) -> None:
        self._require_weights()

    def _check_encoder(self, path: str, meta: dict[str, Any], state_dict: dict[str, Tensor]) -> None:
        expected = {
            "encoder": self.encoder_name,
            "feature_dim": self.feature_dim,
            "in_channels": self.hparams.get("in_channels"),
        }
        for key, value in expected.items():
            if meta.get(key) is not None and value is not None and meta[key] != value:
                raise ValueError(
                    f"The encoder of {path!r} does not match this model: it has {key}={meta[key]!r}, this model "
                    f"{key}={value!r}. Build the probe with the SupCon model's encoder settings."
                )
        own = self.encoder.state_dict()
        missing, unexpected = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
        shapes = [
            f"{key}: {tuple(state_dict[key].shape)} vs {tuple(own[key].shape)}"
            for key in own
            if key in state_dict and state_dict[key].shape != own[key].shape
        ]
        if missing or unexpected or shapes:
            raise ValueError(
                f"The encoder weights of {path!r} ({meta.get('encoder')!r}) do not fit this model's encoder "
                f"({self.encoder_name!r}): missing {missing[:3]}, unexpected {unexpected[:3]}, shapes (file vs "
                f"model) {shapes[:3]}."
            )

    def train(self, mode: bool = True) -> LinearProbeModule:
        """Set the module's mode; a frozen encoder always stays in eval mode (BatchNorm statistics fixed)."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def features(self, inputs: Tensor) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            out: Tensor = self.encoder(inputs)
        return out

    def optimized_parameters(self) -> list[nn.Parameter]:
        """The classifier; a fine-tuned encoder too, unless it has its own ``encoder_lr`` (then an extra group)."""
        if self.freeze_encoder or self.encoder_lr is not None:
            return list(self.classifier.parameters())
        return list(self.classifier.parameters()) + list(self.encoder.parameters())

    def extra_param_groups(self) -> list[dict[str, Any]]:
        """The fine-tuned encoder at ``encoder_lr``, split like the main groups (no weight decay for ``ndim <= 1``)."""
        if self.freeze_encoder or self.encoder_lr is None:
            return []
        return [group | {"lr": self.encoder_lr} for group in decay_groups(self.encoder.parameters())]
