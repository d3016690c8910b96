"""Lightning hooks shared by the modules that own an :class:`~lightning_supcon.models.online_eval.OnlineEvaluation`.

At the end of each validation and test epoch the kNN bank (the DataModule's clean training set, see
:mod:`lightning_supcon.utils.bank`) is encoded and ``{stage}/knn_*`` logged, with the retrieval metrics when on;
when the DataModule has an out-of-distribution split (its ``ood_dataloader()``, asked once at the epoch's start) and
``online.ood_k > 0``, that split is encoded after the bank and ``{stage}/ood_*`` logged;
``predict_step`` returns the encoder features, the module's own heads
(:meth:`OnlineEvaluationHooks.prediction_heads`) and the labels when given.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_supcon.models.online_eval import OnlineEvaluation, is_headline
from lightning_supcon.utils.bank import bank_batches, loader_batches, ood_loader


class OnlineEvaluationHooks(pl.LightningModule):
    """Epoch-end kNN and OOD logging and the prediction output; the module sets ``self.online`` and defines the two
    methods below."""

    online: OnlineEvaluation
    _ood_split: DataLoader | None = None  # this evaluation epoch's OOD split, read at its end

    def encode(self, images: Tensor) -> Tensor:
        """Encoder features ``(batch, feature_dim)`` of images ``(batch, *input_shape)``."""
        raise NotImplementedError

    def prediction_heads(self, features: Tensor) -> dict[str, Tensor]:
        """What ``predict_step`` returns beside the features, e.g. ``{"logits": ...}``."""
        raise NotImplementedError

    def _begin_online(self) -> None:
        """Ask the DataModule for its OOD split (only when the OOD metrics are on) and begin the epoch with it."""
        self._ood_split = ood_loader(self.trainer) if self.online.ood is not None else None
        self.online.begin_epoch(ood_split=self._ood_split is not None)

    def _log_online(self, stage: str) -> None:
        """Encode the kNN bank and the OOD split, then log ``{stage}/knn_*``, the retrieval metrics and
        ``{stage}/ood_*`` (nothing of what is off or has no data on any rank)."""
        self.online.fill_bank(self.encode, bank_batches(self.trainer))
        split, self._ood_split = self._ood_split, None
        if split is not None:
            self.online.score_ood(self.encode, loader_batches(self.trainer, split))
        results = self.online.knn_results(stage) | self.online.retrieval_results(stage) | self.online.ood_results(stage)
        for name, value in results.items():  # already global: sync_dist averages equal values
            self.log(name, value, prog_bar=is_headline(name), sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._begin_online()

    def on_test_epoch_start(self) -> None:
        self._begin_online()

    def on_validation_epoch_end(self) -> None:
        self._log_online("val")

    def on_test_epoch_end(self) -> None:
        self._log_online("test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """``{"features", <prediction_heads>, "labels"}`` of a batch ``images`` or ``(images, labels)``."""
        images, labels = batch if isinstance(batch, list | tuple) else (batch, None)
        features = self.encode(images)
        out = {"features": features, **self.prediction_heads(features)}
        if labels is not None:
            out["labels"] = labels
        return out
