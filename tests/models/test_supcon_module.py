"""SupConModule: training on ready-made views, online evaluation, checks of its inputs."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_supcon import DigitsDataModule, OnlineEval, Queue, Schedule, SupConLoss, SupConModule
from lightning_supcon.cli import cli
from lightning_supcon.data import MultilabelDigitsDataModule
from lightning_supcon.models.optimization import sgd
from lightning_supcon.optim import LARS, ScaleRule
from tests.helpers import DIGITS, cli_error, cpu_trainer, fit_args, one_error_line


class MLP(nn.Module):
    """A BN-free encoder of flat inputs."""

    def __init__(self, in_dim: int = 12, feature_dim: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, 32), nn.ReLU(), nn.Linear(32, feature_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


def _views_loader(batch: int = 8, n_views: int = 2, n: int = 32) -> DataLoader:
    """Views of clustered data: class centre + sample noise + view noise."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 4
    centres = torch.randn(4, 12, generator=gen)
    samples = centres[labels] + 0.5 * torch.randn(n, 12, generator=gen)
    views = samples[:, None] + 0.3 * torch.randn(n, n_views, 12, generator=gen)
    return DataLoader(TensorDataset(views, labels), batch_size=batch, drop_last=True)


class TestSupConModule:
    def test_plain_dataloader_of_views(self, tmp_path: Path) -> None:
        model = SupConModule(encoder=MLP(), feature_dim=16, num_classes=4, projection_dim=8, online=OnlineEval(knn_k=0))
        trainer = cpu_trainer(tmp_path, max_epochs=2)
        trainer.fit(model, train_dataloaders=_views_loader())
        assert trainer.global_step == 8
        metrics = trainer.callback_metrics
        assert {"train/loss", "train/probe_loss", "train/probe_top1", "train/global_batch"} <= set(metrics)
        assert metrics["train/global_batch"].item() == 8

    def test_training_lowers_the_loss(self, tmp_path: Path) -> None:
        torch.manual_seed(0)
        model = SupConModule(
            encoder=MLP(),
            num_classes=4,
            optimizer=sgd(lr=0.5, weight_decay=1e-4),
            feature_dim=16,
            online=OnlineEval(knn_k=0, probe=False),
        )
        loader = _views_loader(batch=32, n=32)
        views, labels = next(iter(loader))
        before = model.criterion(model.project(model(views.flatten(0, 1))).view(32, 2, -1), labels).item()
        cpu_trainer(tmp_path, max_epochs=20).fit(model, train_dataloaders=loader)
        after = model.criterion(model.project(model(views.flatten(0, 1))).view(32, 2, -1), labels).item()
        assert after < before - 0.2

    def test_digits_fast_dev_run_logs_eval_metrics(self, tmp_path: Path) -> None:
        dm = DigitsDataModule(batch_size=64)
        model = SupConModule(encoder="small_cnn", in_channels=1, num_classes=10, online=OnlineEval(knn_k=20))
        trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=2)
        trainer.fit(model, datamodule=dm)
        assert {"val/knn_top1", "val/knn_top5", "val/probe_top1", "val/probe_top5", "val/loss"} <= set(
            trainer.callback_metrics
        )
        results = trainer.test(model, datamodule=dm, verbose=False)[0]
        assert 0.0 <= results["test/probe_top1"] <= 1.0

    def test_simclr_mode_ignores_labels(self, tmp_path: Path) -> None:
        model = SupConModule(encoder=MLP(), feature_dim=16, num_classes=4, supervised=False, online=OnlineEval(knn_k=0))
        views, _ = next(iter(_views_loader()))
        loss_a = model.criterion(model.project(model(views.flatten(0, 1))).view(8, 2, -1), None)
        assert torch.isfinite(loss_a)
        cpu_trainer(tmp_path, fast_dev_run=True).fit(model, train_dataloaders=_views_loader())

    def test_predict_returns_features_projections_labels(self, tmp_path: Path) -> None:
        model = SupConModule(encoder=MLP(), feature_dim=16, num_classes=4, projection_dim=8)
        loader = DataLoader(TensorDataset(torch.randn(6, 12), torch.arange(6) % 4), batch_size=3)
        out = cpu_trainer(tmp_path).predict(model, loader)
        assert out is not None
        assert out[0]["features"].shape == (3, 16) and out[0]["projections"].shape == (3, 8)
        torch.testing.assert_close(out[0]["projections"].norm(dim=1), torch.ones(3))

    @pytest.mark.parametrize(
        ("optimizer", "lr_scaling"),
        [(LARS, "sqrt"), (torch.optim.AdamW, "linear"), (torch.optim.RMSprop, "none"), (torch.optim.NAdam, "none")],
    )
    def test_optimizers_and_lr_scaling(self, tmp_path: Path, optimizer: type, lr_scaling: ScaleRule) -> None:
        model = SupConModule(
            encoder="small_cnn",
            in_channels=1,
            num_classes=10,
            optimizer=functools.partial(optimizer, lr=0.1, weight_decay=1e-4),
            schedule=Schedule(lr_scaling=lr_scaling, warmup_epochs=1),
            online=OnlineEval(knn_k=0),
        )
        trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0)
        trainer.fit(model, datamodule=DigitsDataModule(batch_size=64))
        optim = trainer.optimizers[0]
        assert type(optim) is optimizer
        expected = {"linear": 0.1 * 64 / 256, "sqrt": 0.1 * (64 / 256) ** 0.5, "none": 0.1}[lr_scaling]
        assert optim.param_groups[0]["initial_lr"] == pytest.approx(expected)
        assert optim.param_groups[-1]["initial_lr"] == pytest.approx(0.1)  # the probe keeps probe_lr
        decays = [(group["weight_decay"], min(p.ndim for p in group["params"])) for group in optim.param_groups]
        assert decays == [(1e-4, 2), (0.0, 1), (0.0, 1)]  # weights; biases and norms; the probe


class TestMemoryQueue:
    @pytest.mark.parametrize("queue_momentum", [None, 0.9])
    def test_queue_fills_and_wraps(self, tmp_path: Path, queue_momentum: float | None) -> None:
        model = SupConModule(
            encoder=MLP(),
            feature_dim=16,
            num_classes=4,
            online=OnlineEval(knn_k=0),
            queue=Queue(size=40, momentum=queue_momentum),
        )
        cpu_trainer(tmp_path, max_steps=3).fit(model, train_dataloaders=_views_loader())  # 3 x 8 x 2 views
        assert model.queue is not None
        assert int(model.queue.filled) == 40 and int(model.queue.ptr) == 48 % 40
        features, labels = model.queue.entries()
        assert features is not None and labels is not None
        torch.testing.assert_close(features.norm(dim=1), torch.ones(40))
        assert set(labels.tolist()) <= {0, 1, 2, 3}
        if queue_momentum is not None:
            assert model.momentum_encoder is not None
            assert not any(p.requires_grad for p in model.momentum_encoder.parameters())
            online = next(model.encoder.parameters())
            assert not torch.equal(online, next(model.momentum_encoder.parameters()))

    def test_queue_is_in_the_checkpoint(self, tmp_path: Path) -> None:
        model = SupConModule(
            encoder=MLP(), feature_dim=16, num_classes=4, online=OnlineEval(knn_k=0), queue=Queue(size=8)
        )
        assert {"queue.features", "queue.labels", "queue.ptr", "queue.filled"} <= set(model.state_dict())

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"size": 0}, r"`queue.size` >= 1 \(leave `queue` out for none\), but got 0"),
            ({"size": 8, "momentum": 1.0}, r"`queue.momentum` in \[0, 1\) or None, but got 1.0"),
        ],
    )
    def test_bad_queue_arguments(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            SupConModule(encoder=MLP(), feature_dim=16, queue=Queue(**kwargs))

    def test_options_as_records_from_a_checkpoint_s_plain_hyperparameters(self) -> None:
        """A checkpoint's hyperparameters hold the records as plain dicts: the module rebuilds them (no CLI)."""
        model = SupConModule(encoder=MLP(), feature_dim=16, online={"knn_k": 0, "probe": False}, queue={"size": 8})
        assert model.online.knn is None and model.queue is not None and model.queue.size == 8
        assert model.hparams["online"]["knn_k"] == 0 and model.hparams["queue"] == {"size": 8, "momentum": None}


class TestSupConModuleErrors:
    def test_module_encoder_needs_feature_dim(self) -> None:
        with pytest.raises(ValueError, match="feature_dim"):
            SupConModule(encoder=nn.Linear(4, 4))

    def test_unknown_encoder_name(self) -> None:
        with pytest.raises(ValueError, match="'resnet7'"):
            SupConModule(encoder="resnet7")

    def test_builtin_with_wrong_feature_dim(self) -> None:
        with pytest.raises(ValueError, match="outputs 512 features"):
            SupConModule(encoder="resnet18", feature_dim=128)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"num_classes": 1}, "num_classes"),
            ({"online": {"knn_k": -1}}, r"`online.knn_k` >= 0 \(0 turns kNN off\), but got -1"),
            ({"schedule": {"lr_decay_epochs": [3, 1]}}, r"`lr_decay_epochs` ascending and >= 0, but got \[3, 1\]"),
            ({"schedule": {"lr_decay_epochs": [1], "lr_decay_rate": 0.0}}, r"`lr_decay_rate` in \(0, 1\], but got 0.0"),
            ({"schedule": {"lr_decay_epochs": [1], "min_lr_ratio": 0.1}}, "with step decay .* leave it at 0"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            if "schedule" in kwargs:  # validated where it is declared, once for every module
                kwargs = {"schedule": Schedule(**kwargs["schedule"])}
            SupConModule(encoder=MLP(), feature_dim=16, **kwargs)

    def test_labels_outside_num_classes(self, tmp_path: Path) -> None:
        model = SupConModule(encoder=MLP(), feature_dim=16, num_classes=3, online=OnlineEval(knn_k=0))
        with pytest.raises(ValueError, match=r"num_classes=3.*\[0, 3\]"):
            cpu_trainer(tmp_path, fast_dev_run=True).fit(model, train_dataloaders=_views_loader())

    def test_views_without_view_dim(self, tmp_path: Path) -> None:
        model = SupConModule(encoder=MLP(), feature_dim=16, num_classes=4, online=OnlineEval(knn_k=0))
        loader = DataLoader(TensorDataset(torch.randn(8, 12), torch.arange(8) % 4), batch_size=4)
        with pytest.raises(ValueError, match="n_views"):
            cpu_trainer(tmp_path, fast_dev_run=True).fit(model, train_dataloaders=loader)

    def test_nan_loss_stops_with_a_message(self, tmp_path: Path) -> None:
        model = SupConModule(encoder=MLP(), feature_dim=16, num_classes=4, online=OnlineEval(knn_k=0))
        loader = DataLoader(TensorDataset(torch.full((8, 2, 12), float("nan")), torch.arange(8) % 4), batch_size=8)
        with pytest.raises(FloatingPointError, match=r"step 0.*learning rate.*temperature"):
            cpu_trainer(tmp_path, fast_dev_run=True).fit(model, train_dataloaders=loader)


class TestStepDecay:
    def test_learning_rate_of_every_step(self, tmp_path: Path) -> None:
        """4 epochs of 4 steps, warmup 1 epoch, x0.2 after epochs 2 and 3, as the reference code decays."""
        lrs: list[float] = []
        record = pl.callbacks.LambdaCallback(
            on_train_batch_start=lambda trainer, *_: lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        )
        model = SupConModule(
            encoder=MLP(),
            feature_dim=16,
            num_classes=4,
            optimizer=sgd(lr=0.5, weight_decay=1e-4),
            schedule=Schedule(warmup_epochs=1, lr_decay_epochs=[2, 3], lr_decay_rate=0.2),
            online=OnlineEval(knn_k=0, probe=False),
        )
        cpu_trainer(tmp_path, max_epochs=4, callbacks=[record]).fit(model, train_dataloaders=_views_loader())
        expected = [0.5 * (s + 1) / 4 for s in range(4)] + [0.5] * 4 + [0.1] * 4 + [0.02] * 4
        assert lrs == pytest.approx(expected, rel=1e-12)

    def test_epochs_keep_their_length_when_max_steps_ends_the_run(self, tmp_path: Path) -> None:
        """4 steps per epoch; max_steps=6 stops the 10-epoch run early: the warmup still spans 4 steps."""
        lrs: list[float] = []
        record = pl.callbacks.LambdaCallback(
            on_train_batch_start=lambda trainer, *_: lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        )
        model = SupConModule(
            encoder=MLP(),
            feature_dim=16,
            num_classes=4,
            optimizer=sgd(lr=0.4, weight_decay=1e-4),
            schedule=Schedule(warmup_epochs=1),
            online=OnlineEval(knn_k=0, probe=False),
        )
        trainer = cpu_trainer(tmp_path, max_epochs=10, max_steps=6, callbacks=[record])
        trainer.fit(model, train_dataloaders=_views_loader())
        cosine = [0.4 * 0.5 * (1 + math.cos(math.pi * t / 2)) for t in range(2)]  # steps 4 and 5 of 6
        assert lrs == pytest.approx([0.1, 0.2, 0.3, 0.4, *cosine], rel=1e-12)


class TestResumeSchedule:
    def test_warns_when_resuming_into_a_longer_run(self, tmp_path: Path) -> None:
        model = SupConModule(
            encoder=MLP(), feature_dim=16, num_classes=4, schedule=Schedule(warmup_epochs=1), online=OnlineEval(knn_k=0)
        )
        trainer = cpu_trainer(tmp_path, max_epochs=1)
        trainer.fit(model, train_dataloaders=_views_loader())
        trainer.save_checkpoint(tmp_path / "one.ckpt")
        longer = SupConModule(
            encoder=MLP(), feature_dim=16, num_classes=4, schedule=Schedule(warmup_epochs=1), online=OnlineEval(knn_k=0)
        )
        with pytest.warns(UserWarning, match="schedule restored from the checkpoint spans 4 steps, but this run has 8"):
            cpu_trainer(tmp_path, max_epochs=2).fit(
                longer, train_dataloaders=_views_loader(), ckpt_path=tmp_path / "one.ckpt"
            )

    def test_no_warning_for_a_plain_resume(self, tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
        class StopAfterFirstEpoch(pl.Callback):
            def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
                trainer.should_stop = True

        model = SupConModule(encoder=MLP(), feature_dim=16, num_classes=4, online=OnlineEval(knn_k=0))
        trainer = cpu_trainer(tmp_path, max_epochs=2, callbacks=[StopAfterFirstEpoch()])
        trainer.fit(model, train_dataloaders=_views_loader())
        assert trainer.global_step == 4
        trainer.save_checkpoint(tmp_path / "half.ckpt")
        again = SupConModule(encoder=MLP(), feature_dim=16, num_classes=4, online=OnlineEval(knn_k=0))
        cpu_trainer(tmp_path, max_epochs=2).fit(
            again, train_dataloaders=_views_loader(), ckpt_path=tmp_path / "half.ckpt"
        )
        assert not [w for w in recwarn if "schedule restored" in str(w.message)]


class TestSyncBatchNormOnCpu:
    def test_pytorch_sync_batchnorm_on_cpu_is_refused_with_the_fix(self) -> None:
        model = SupConModule(encoder="small_cnn", in_channels=1, online=OnlineEval(knn_k=0))
        model.on_fit_start()  # plain BatchNorm: fine
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # what `Trainer(sync_batchnorm=True)` does under DDP
        with pytest.raises(ValueError, match=r"runs on GPUs only.*GlobalBatchNormSync"):
            model.on_fit_start()
        model.eval()  # not synchronised in eval mode: nothing to refuse
        model.on_fit_start()


class TestNoPositives:
    """``n_views=1``: an anchor has positives only through other samples of its class.

    Expected behaviour (what a demanding user wants): a batch whose anchors all lack positives contributes a loss of
    0 (no gradient, no NaN) so one unlucky batch cannot kill a run; but a configuration that can never have a
    positive (``n_views=1`` with ``supervised=False``) is an error at the start, not a silent run at loss 0.
    """

    def test_batch_without_positives_gives_zero_loss_not_nan(self) -> None:
        model = SupConModule(in_channels=1, num_classes=10, online=OnlineEval(knn_k=0, probe=False))
        loss = model.criterion(model.project(model(torch.randn(6, 1, 8, 8)))[:, None], torch.arange(6))
        assert torch.isfinite(loss) and loss.item() == 0.0

    def test_unsupervised_single_view_is_an_error(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        args = fit_args(
            "--data.init_args.n_views=1", "--model.init_args.supervised=false", "--model.init_args.online.knn_k=0"
        )
        line = one_error_line(cli_error(capsys, args, workdir))
        assert "n_views" in line


class TestInjectedLoss:
    def test_the_module_uses_the_loss_it_is_given(self) -> None:
        loss = SupConLoss(temperature=0.2, summation="in")
        model = SupConModule(encoder=MLP(), feature_dim=16, loss=loss)
        assert model.criterion is loss
        assert model.hparams["loss"]["init_args"]["temperature"] == 0.2  # plain data, not a pickled module
        assert SupConModule(encoder=MLP(), feature_dim=16).criterion.gather_distributed  # the default: global batch

    def test_temperature_from_the_config_reaches_the_loss(self) -> None:
        app = cli(["--config", DIGITS, "--model.init_args.loss.init_args.temperature=0.3"], run=False)
        assert isinstance(app.model, SupConModule) and app.model.criterion.temperature == 0.3

    def test_the_old_flat_loss_options_are_gone(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        lines = cli_error(capsys, fit_args("--model.init_args.temperature=0.3"), workdir)
        assert any("'temperature' is not accepted" in line for line in lines)

    def test_evaluation_uses_the_loss_without_the_gather(self, tmp_path: Path) -> None:
        model = SupConModule(encoder=MLP(), feature_dim=16, num_classes=4, online=OnlineEval(knn_k=0))
        calls: list[bool | None] = []
        forward = model.criterion.forward

        def spy(*args: object, gather_distributed: bool | None = None, **kwargs: object) -> torch.Tensor:
            calls.append(gather_distributed)
            return forward(*args, gather_distributed=gather_distributed, **kwargs)  # type: ignore[arg-type]

        model.criterion.forward = spy  # type: ignore[method-assign]
        loader = DataLoader(TensorDataset(torch.randn(8, 12), torch.arange(8) % 4), batch_size=4)
        cpu_trainer(tmp_path).validate(model, loader, verbose=False)
        assert calls == [False, False]


class TestEvaluationReports:
    def test_test_stage_reports_knn_like_validation(self, tmp_path: Path) -> None:
        dm = DigitsDataModule(batch_size=64)
        model = SupConModule(encoder="small_cnn", in_channels=1, num_classes=10, online=OnlineEval(knn_k=5))
        trainer = cpu_trainer(tmp_path, limit_val_batches=2, limit_test_batches=2)
        validated = trainer.validate(model, datamodule=dm, verbose=False)
        tested = trainer.test(model, datamodule=dm, verbose=False)
        assert {key.replace("val/", "test/") for key in validated[0]} == set(tested[0])
        assert {"test/knn_top1", "test/knn_top5", "test/probe_top1", "test/loss"} <= set(tested[0])

    def test_validate_reports_each_metric_once(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        dm = DigitsDataModule(batch_size=64)
        model = SupConModule(encoder="small_cnn", in_channels=1, num_classes=10, online=OnlineEval(knn_k=5))
        results = cpu_trainer(tmp_path, limit_val_batches=2).validate(model, datamodule=dm)
        assert len(results) == 1 and "val/knn_top1" in results[0]
        out = capsys.readouterr().out
        assert "DataLoader 0" in out and "DataLoader 1" not in out

    def test_the_bank_follows_the_trainer_limits(self, tmp_path: Path) -> None:
        dm = DigitsDataModule(batch_size=64, eval_batch_size=100)
        model = SupConModule(encoder="small_cnn", in_channels=1, num_classes=10, online=OnlineEval(knn_k=5))
        seen: list[int] = []
        fill = model.online.fill_bank
        model.online.fill_bank = lambda encode, batches: fill(  # type: ignore[method-assign]
            encode, [seen.append(len(b[1])) or b for b in batches]
        )
        cpu_trainer(tmp_path, limit_val_batches=3).validate(model, datamodule=dm, verbose=False)
        assert seen == [100, 100, 100]


class TestJointCrossEntropy:
    """``ce_weight``: SupCon + ce_weight x CE with the classifier's gradient reaching the encoder; 0: detached probe."""

    @staticmethod
    def _model(ce_weight: float) -> SupConModule:
        torch.manual_seed(0)
        return SupConModule(
            encoder=MLP(), feature_dim=16, num_classes=4, ce_weight=ce_weight, online=OnlineEval(knn_k=0)
        ).double()

    @pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # the step, called without a Trainer
    @pytest.mark.parametrize("ce_weight", [0.0, 0.5, 2.0])
    def test_gradients_are_supcon_plus_weighted_cross_entropy(self, ce_weight: float) -> None:
        model = self._model(ce_weight)
        views, labels = next(iter(_views_loader()))
        views = views.double()
        encoder, probe = list(model.encoder.parameters()), list(model.online.parameters())
        total = model.training_step((views, labels), 0)
        got = torch.autograd.grad(total, encoder + probe)
        # Reference: the two losses built again from their definitions, differentiated separately.
        features = model(views.flatten(0, 1))
        supcon = model.criterion(model.project(features).view(8, 2, -1), labels)
        cross_entropy = nn.functional.cross_entropy(model.online.probe(features), labels.repeat_interleave(2))
        supcon_grads = torch.autograd.grad(supcon, encoder, retain_graph=True)
        ce_encoder = torch.autograd.grad(cross_entropy, encoder, retain_graph=True)
        ce_probe = torch.autograd.grad(cross_entropy, probe)
        assert all(g.abs().sum() > 0 for g in ce_encoder)  # the CE does move the encoder when not detached
        for g, s, c in zip(got[: len(encoder)], supcon_grads, ce_encoder, strict=True):
            torch.testing.assert_close(g, s + ce_weight * c, rtol=1e-10, atol=1e-12)
        probe_weight = ce_weight if ce_weight else 1.0  # a detached probe still learns from its own CE
        for g, c in zip(got[len(encoder) :], ce_probe, strict=True):
            torch.testing.assert_close(g, probe_weight * c, rtol=1e-10, atol=1e-12)

    def test_logs_the_cross_entropy_and_the_total(self, tmp_path: Path) -> None:
        model = self._model(0.5).float()
        trainer = cpu_trainer(tmp_path, max_steps=2)
        trainer.fit(model, train_dataloaders=_views_loader())
        metrics = trainer.callback_metrics
        assert "train/probe_loss" not in metrics
        expected = metrics["train/loss"] + 0.5 * metrics["train/ce_loss"]
        torch.testing.assert_close(metrics["train/total_loss"], expected)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [({"ce_weight": -1.0}, "ce_weight"), ({"ce_weight": 1.0, "online": OnlineEval(probe=False)}, "online.probe")],
    )
    def test_bad_weights(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            SupConModule(encoder="small_cnn", in_channels=1, **kwargs)


class TestMultilabel:
    """Multi-hot labels: the loss weighs pairs by label overlap, the probe and kNN log mAP / F1 / accuracy."""

    @pytest.mark.filterwarnings("ignore:No positive samples")
    def test_multilabel_digits_log_map_and_f1(self, tmp_path: Path) -> None:
        dm = MultilabelDigitsDataModule(batch_size=32, n_views=2)
        model = SupConModule(
            encoder="small_cnn", in_channels=1, num_classes=3, multilabel=True, online=OnlineEval(knn_k=5)
        )
        trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=2)
        trainer.fit(model, datamodule=dm)
        expected = {"train/loss", "train/probe_f1", "train/probe_accuracy", "val/loss", "val/probe_map", "val/knn_map"}
        assert expected | {"val/probe_f1", "val/knn_f1", "val/knn_accuracy"} <= set(trainer.callback_metrics)
        assert not any("top" in key for key in trainer.callback_metrics)

    def test_multi_hot_labels_reach_the_loss(self) -> None:
        model = SupConModule(
            encoder=MLP(), feature_dim=16, num_classes=3, multilabel=True, online=OnlineEval(probe=False, knn_k=0)
        )
        seen: list[torch.Tensor] = []
        model.criterion.register_forward_pre_hook(lambda _, args: seen.append(args[1]))
        views, labels = torch.randn(4, 2, 12), torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 0], [1, 0, 1]])
        with pytest.warns(UserWarning, match="self.log"):
            model.training_step((views, labels), 0)
        assert torch.equal(seen[0], labels)

    def test_class_labels_to_a_multilabel_model(self) -> None:
        model = SupConModule(encoder=MLP(), feature_dim=16, num_classes=3, multilabel=True)
        with pytest.raises(ValueError, match="Class labels need `multilabel=False`"):
            model._check_batch(torch.randn(4, 2, 12), torch.tensor([0, 1, 2, 0]))

    def test_unknown_class_labels_are_accepted(self) -> None:
        model = SupConModule(encoder=MLP(), feature_dim=16, num_classes=3)
        model._check_batch(torch.randn(4, 2, 12), torch.tensor([0, -1, 2, -1]))  # issue 17 item 3: -1 = unknown
        with pytest.raises(ValueError, match=r"\[-1, num_classes=3\)"):
            model._check_batch(torch.randn(4, 2, 12), torch.tensor([0, -2, 2, -1]))

    def test_partially_labelled_batches_train(self, tmp_path: Path) -> None:
        views, labels = next(iter(_views_loader(batch=32)))
        partial = torch.where(torch.arange(32) % 2 == 0, labels, -1)  # half the samples of unknown class
        loader = DataLoader(TensorDataset(views, partial), batch_size=8)
        model = SupConModule(encoder=MLP(), feature_dim=16, num_classes=4, online=OnlineEval(knn_k=0))
        trainer = cpu_trainer(tmp_path, max_steps=2)
        trainer.fit(model, train_dataloaders=loader)
        assert torch.isfinite(trainer.callback_metrics["train/loss"])
        assert torch.isfinite(trainer.callback_metrics["train/probe_loss"])

    def test_no_queue_with_multi_hot_labels(self) -> None:
        with pytest.raises(ValueError, match="leave `queue` out with `multilabel=True`"):
            SupConModule(encoder="small_cnn", in_channels=1, num_classes=3, multilabel=True, queue=Queue(size=64))
