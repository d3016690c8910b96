"""OnlineEvaluationHooks through the Trainer: the online OOD metrics of a DataModule's OOD split, ``{stage}/ood_*``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_supcon import CrossEntropyModule, DigitsDataModule, OnlineEval, SupConModule
from lightning_supcon.metrics import knn_ood_score, ood_metrics
from lightning_supcon.models.evaluation_hooks import OnlineEvaluationHooks
from lightning_supcon.utils.numerics import l2_normalize
from tests.helpers import cpu_trainer, run_worker
from tests.models.ddp_ood import OODDigits
from tests.models.ddp_ood import main as ddp_ood_main

NAMES = ("ood_auroc", "ood_aupr_in", "ood_aupr_out", "ood_fpr95")
LIMITS = {"max_epochs": 1, "limit_train_batches": 2, "num_sanity_val_steps": 1}


def _supcon(**online: Any) -> SupConModule:
    pl.seed_everything(0)
    return SupConModule(encoder="small_cnn", in_channels=1, num_classes=10, online=OnlineEval(**online))


def _encode(model: OnlineEvaluationHooks, loader: DataLoader) -> Tensor:
    with torch.no_grad():
        return torch.cat([model.encode(images) for images, _ in loader])


def _reference(model: OnlineEvaluationHooks, dm: OODDigits, k: int = 50) -> dict[str, float]:
    """[Sun et al. 2022]'s score and the exact metrics, from the loaders read in one pass each: the validation set
    in, the clean training set as bank, the OOD split out (features L2-normalised, as the online bank stores them)."""
    model.eval()
    inside, bank = _encode(model, dm.val_dataloader()), _encode(model, dm.train_eval_dataloader())
    split = dm.ood_dataloader()
    assert split is not None
    scores = knn_ood_score(l2_normalize(torch.cat([inside, _encode(model, split)]), dim=1), l2_normalize(bank, 1), k)
    metrics = ood_metrics(scores[: len(inside)], scores[len(inside) :])
    return {f"ood_{name}": value.item() for name, value in metrics.items()}


def _logged(metrics: Mapping[str, Any], stage: str) -> dict[str, float]:
    return {name: float(metrics[f"{stage}/{name}"]) for name in NAMES}


class TestOnlineOODThroughTheTrainer:
    def test_logged_under_val_and_test_as_the_reference(self, tmp_path: Path) -> None:
        dm, model = OODDigits(), _supcon(knn_k=5)
        trainer = cpu_trainer(tmp_path, **LIMITS)
        trainer.fit(model, datamodule=dm)
        expected = _reference(model, dm)
        assert 0 < expected["ood_auroc"] < 1 and 0 < expected["ood_fpr95"] < 1  # the comparison can fail
        for name, value in _logged(trainer.callback_metrics, "val").items():
            assert value == pytest.approx(expected[name], abs=1e-12), name
        (results,) = trainer.test(model, datamodule=dm, verbose=False)  # DigitsDataModule tests on its val split
        for name, value in _logged(results, "test").items():
            assert value == pytest.approx(expected[name], abs=1e-12), name
        # One loader per evaluation epoch (sanity check, validation, test; the reference's is the 4th), each read
        # once: the sanity check's 1 batch of 16, then the 30 samples twice, and the reference's 30.
        assert dm.ood_loaders == 4 and dm.ood_loads == 16 + 30 + 30 + 30

    @pytest.mark.parametrize("limits", [{"fast_dev_run": True}, {"max_epochs": 1, "limit_val_batches": 1}])
    def test_the_ood_split_follows_the_trainers_batch_limits(self, tmp_path: Path, limits: dict) -> None:
        dm, model = OODDigits(), _supcon(knn_k=0, probe=False)
        trainer = cpu_trainer(tmp_path, limit_train_batches=1, num_sanity_val_steps=0, **limits)
        trainer.fit(model, datamodule=dm)
        assert set(_logged(trainer.callback_metrics, "val")) == set(NAMES)  # knn_k=0: the bank pass runs for OOD
        assert dm.ood_loads == 16  # one batch

    def test_off_with_ood_k_0(self, tmp_path: Path) -> None:
        dm, trainer = OODDigits(), cpu_trainer(tmp_path, **LIMITS)
        trainer.fit(_supcon(knn_k=5, ood_k=0), datamodule=dm)
        assert dm.ood_loaders == 0  # not even asked
        assert "val/knn_top1" in trainer.callback_metrics
        assert not any("ood" in name for name in trainer.callback_metrics)

    @pytest.mark.parametrize("without", ["no OOD split", "no ood_dataloader"])
    def test_nothing_logged_and_no_bank_pass_without_an_ood_split(self, tmp_path: Path, without: str) -> None:
        no_split = without == "no OOD split"
        datamodule = OODDigits(ood_size=None) if no_split else DigitsDataModule(image_size=8, batch_size=16)
        bank_reads: list[int] = []
        read_bank = datamodule.train_eval_dataloader

        def counted() -> DataLoader:
            bank_reads.append(1)
            return read_bank()

        datamodule.train_eval_dataloader = counted  # type: ignore[method-assign]
        trainer = cpu_trainer(tmp_path, limit_val_batches=2, **LIMITS)
        trainer.fit(_supcon(knn_k=0, probe=False), datamodule=datamodule)
        (results,) = trainer.test(_supcon(knn_k=0, probe=False), datamodule=datamodule, verbose=False)
        assert not any("ood" in name for name in [*trainer.callback_metrics, *results])
        assert bank_reads == []  # no kNN and no OOD split: no clean training pass

    def test_cross_entropy_checkpoint_monitors_val_ood_auroc(self, tmp_path: Path) -> None:
        pl.seed_everything(0)
        model = CrossEntropyModule(encoder="small_cnn", in_channels=1, num_classes=10)  # online: no kNN, OOD on
        best = ModelCheckpoint(dirpath=tmp_path, monitor="val/ood_auroc", mode="max")
        trainer = cpu_trainer(tmp_path, enable_checkpointing=True, callbacks=[best], **LIMITS)
        trainer.fit(model, datamodule=OODDigits())  # a monitor that is never logged raises here
        assert best.best_model_score == trainer.callback_metrics["val/ood_auroc"]
        assert Path(best.best_model_path).is_file() and "val/ood_fpr95" in trainer.callback_metrics


@pytest.mark.distributed
def test_ddp_uneven_shards_log_what_one_process_logs(tmp_path: Path) -> None:
    """2 gloo processes: validation 21 / 20 samples, OOD split 2 / 1 for ``validate`` and 1 / 0 for ``test``."""
    single, double = tmp_path / "1.pt", tmp_path / "2.pt"
    ddp_ood_main(1, str(single))  # in this process: one spawn less
    run_worker(Path(__file__).with_name("ddp_ood.py"), "2", str(double), cwd=tmp_path)  # a hang times out
    expected, results = torch.load(single, weights_only=True), torch.load(double, weights_only=True)
    for stage in ("val", "test"):
        assert 0 < expected[f"{stage}/ood_auroc"] < 1  # the comparison can fail
        for name, value in _logged(expected, stage).items():
            assert results[f"{stage}/{name}"] == pytest.approx(value, abs=1e-12), f"{stage}/{name}"
