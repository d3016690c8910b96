"""LinearProbeModule: loading a real SupCon checkpoint, a frozen encoder, clear errors, exported encoders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from lightning_supcon import DigitsDataModule, OnlineEval, SupConModule
from lightning_supcon.cli import cli
from lightning_supcon.encoder_files.export import export_encoder, save_encoder
from lightning_supcon.encoder_files.read import load_encoder_checkpoint
from lightning_supcon.models.cross_entropy import CrossEntropyModule
from lightning_supcon.models.linear_probe import LinearProbeModule
from lightning_supcon.models.optimization import sgd
from tests.helpers import ROOT, cpu_trainer


@pytest.fixture(scope="module")
def supcon_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SupConModule checkpoint after 2 real training steps on the digits (BN statistics have moved)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("supcon")
    model = SupConModule(encoder="small_cnn", in_channels=1, num_classes=10, online=OnlineEval(knn_k=0))
    trainer = cpu_trainer(root, max_steps=2, limit_val_batches=0)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32))
    path = root / "supcon.ckpt"
    trainer.save_checkpoint(path)
    return path


def _encoder_state(path: Path) -> dict[str, Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return {key.removeprefix("encoder."): value for key, value in state.items() if key.startswith("encoder.")}


def _probe(path: Path | str, **kwargs: Any) -> LinearProbeModule:
    options: dict[str, Any] = {"encoder": "small_cnn", "in_channels": 1, "num_classes": 10} | kwargs
    return LinearProbeModule(str(path), **options)


def _save(path: Path, checkpoint: dict) -> Path:
    torch.save(checkpoint, path)
    return path


class MLP(nn.Module):
    """An encoder module (not a built-in name) with a configurable hidden size."""

    feature_dim = 16

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(12, hidden), nn.ReLU(), nn.Linear(hidden, 16))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


class TestLinearProbeModule:
    def test_loads_the_supcon_encoder(self, supcon_checkpoint: Path) -> None:
        probe = _probe(supcon_checkpoint)
        expected = _encoder_state(supcon_checkpoint)
        state = probe.encoder.state_dict()
        assert set(state) == set(expected)
        for key, value in expected.items():
            torch.testing.assert_close(state[key], value, rtol=0, atol=0)
        assert expected["features.1.num_batches_tracked"].item() == 2  # really trained: BN statistics moved

    def test_fit_leaves_the_encoder_unchanged(self, supcon_checkpoint: Path, tmp_path: Path) -> None:
        probe = _probe(supcon_checkpoint, optimizer=sgd(lr=0.5, weight_decay=0.0))
        encoder_before = {k: v.clone() for k, v in probe.encoder.state_dict().items()}
        classifier_before = probe.classifier.weight.detach().clone()
        modes: list[bool] = []

        class RecordMode(pl.Callback):
            def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, *args: object) -> None:
                assert isinstance(module, LinearProbeModule)
                modes.append(any(m.training for m in module.encoder.modules()))
                assert module.classifier.training

        probe.train()  # what a plain PyTorch loop (or an older Lightning) does before training
        trainer = cpu_trainer(
            tmp_path, max_steps=3, limit_val_batches=1, val_check_interval=2, callbacks=[RecordMode()]
        )
        trainer.fit(probe, datamodule=DigitsDataModule(batch_size=32, n_views=2))
        assert modes == [False, False, False]  # eval mode on every step, also after validation
        for key, value in probe.encoder.state_dict().items():
            torch.testing.assert_close(value, encoder_before[key], rtol=0, atol=0, msg=key)
        assert not any(p.requires_grad for p in probe.encoder.parameters())
        assert not torch.equal(probe.classifier.weight, classifier_before)
        optimizer = trainer.optimizers[0]
        assert {id(p) for group in optimizer.param_groups for p in group["params"]} == {
            id(p) for p in probe.classifier.parameters()
        }

    def test_validation_logs_accuracy_and_retrieval(self, supcon_checkpoint: Path, tmp_path: Path) -> None:
        probe = _probe(supcon_checkpoint)
        dm = DigitsDataModule(batch_size=64, n_views=1)
        metrics = cpu_trainer(tmp_path, limit_val_batches=2).validate(probe, datamodule=dm, verbose=False)[0]
        assert {"val/top1", "val/top5", "val/loss", "val/precision_at_1", "val/r_precision", "val/map_at_r"} <= set(
            metrics
        )
        assert 0.0 <= metrics["val/map_at_r"] <= metrics["val/precision_at_1"] <= 1.0
        tested = cpu_trainer(tmp_path, limit_test_batches=1).test(probe, datamodule=dm, verbose=False)[0]
        assert "test/map_at_r" in tested and "test/top1" in tested
        without = _probe(supcon_checkpoint, retrieval=False)
        metrics = cpu_trainer(tmp_path, limit_val_batches=1).validate(without, datamodule=dm, verbose=False)[0]
        assert "val/map_at_r" not in metrics and "val/top1" in metrics

    def test_the_encoder_file_is_named_once_per_run(
        self, supcon_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # A fit said it three times: at fit start, in the sanity check and in the validation.
        dm = DigitsDataModule(batch_size=64, n_views=1)
        trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1)
        trainer.fit(_probe(supcon_checkpoint), datamodule=dm)
        assert capsys.readouterr().out.count("Encoder weights from ") == 1

    def test_silent_substitution_says_which_encoder_file_and_another_image_size(
        self, supcon_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # Stage 2 said nothing of the file (the run) its encoder came from, nor of other inputs than it was trained on.
        link = tmp_path / "last.ckpt"
        link.symlink_to(supcon_checkpoint)
        dm = DigitsDataModule(batch_size=64, n_views=1, image_size=8)  # trained at 16 px
        cpu_trainer(tmp_path, limit_val_batches=1).validate(_probe(link), datamodule=dm, verbose=False)
        captured = capsys.readouterr()
        assert (
            f"Encoder weights from {supcon_checkpoint.resolve()} (a supcon model, encoder 'small_cnn')" in captured.out
        )
        warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
        assert (
            len(warnings) == 1
            and "trained on other inputs than this run's data gives (image_size 16 -> 8, " in (warnings[0])
        )
        same = DigitsDataModule(batch_size=64, n_views=1)
        cpu_trainer(tmp_path, limit_val_batches=1).validate(_probe(link), datamodule=same, verbose=False)
        assert "warning:" not in capsys.readouterr().err

    def test_restored_from_its_own_checkpoint_without_the_supcon_file(
        self, supcon_checkpoint: Path, tmp_path: Path
    ) -> None:
        dm = DigitsDataModule(batch_size=64, n_views=1)
        trained = _probe(supcon_checkpoint, optimizer=sgd(lr=0.5, weight_decay=0.0), retrieval=False)
        trainer = cpu_trainer(tmp_path, max_steps=3, limit_val_batches=0, limit_test_batches=2)
        trainer.fit(trained, datamodule=dm)
        trainer.save_checkpoint(tmp_path / "probe.ckpt")
        expected = trainer.test(trained, datamodule=dm, verbose=False)[0]
        restored = LinearProbeModule(encoder="small_cnn", in_channels=1, num_classes=10, retrieval=False)
        tester = cpu_trainer(tmp_path, limit_test_batches=2)
        assert tester.test(restored, datamodule=dm, ckpt_path=tmp_path / "probe.ckpt", verbose=False)[0] == expected

    def test_no_weights_at_all_is_an_error(self, tmp_path: Path) -> None:
        probe = LinearProbeModule(encoder="small_cnn", in_channels=1, num_classes=10)
        with pytest.raises(ValueError, match=r"no encoder weights: give `checkpoint`.*`--ckpt_path`"):
            cpu_trainer(tmp_path, limit_test_batches=1).test(probe, datamodule=DigitsDataModule(), verbose=False)

    def test_exported_encoder_round_trip(self, supcon_checkpoint: Path, tmp_path: Path) -> None:
        exported = export_encoder(supcon_checkpoint, tmp_path / "nested" / "encoder.pt")
        file = torch.load(exported, weights_only=True)  # loads without unpickling code
        meta = file["lightning_supcon"]
        assert {key: meta[key] for key in ("kind", "encoder", "feature_dim", "in_channels")} == {
            "kind": "supcon",
            "encoder": "small_cnn",
            "feature_dim": 128,
            "in_channels": 1,
        }
        assert meta["preprocessing"]["image_size"] == 16 and meta["encoder_args"]["class"] == "SmallCNN"
        from_export, from_checkpoint = _probe(exported), _probe(supcon_checkpoint)
        for key, value in from_checkpoint.encoder.state_dict().items():
            torch.testing.assert_close(from_export.encoder.state_dict()[key], value, rtol=0, atol=0)

    def test_save_encoder_of_a_live_model(self, tmp_path: Path) -> None:
        model = SupConModule(encoder=MLP(), num_classes=4, online=OnlineEval(knn_k=0))
        path = save_encoder(model, tmp_path / "mlp.pt")
        probe = LinearProbeModule(str(path), encoder=MLP(), num_classes=4)
        torch.testing.assert_close(probe.encoder.state_dict(), model.encoder.state_dict())

    def test_compiled_encoder_weights_are_renamed(self, tmp_path: Path) -> None:
        model = SupConModule(encoder=MLP(), num_classes=4, online=OnlineEval(knn_k=0))
        state = {f"encoder._orig_mod.{k}": v for k, v in model.encoder.state_dict().items()}
        meta = {"kind": "supcon", "encoder": "MLP", "feature_dim": 16, "in_channels": 3}
        path = _save(
            tmp_path / "c.ckpt", {"pytorch-lightning_version": "2", "state_dict": state, "lightning_supcon": meta}
        )
        _, loaded = load_encoder_checkpoint(path)
        assert set(loaded) == set(model.encoder.state_dict())

    def test_predict_returns_features_logits_labels(self, supcon_checkpoint: Path, tmp_path: Path) -> None:
        dm = DigitsDataModule(batch_size=16, n_views=1)
        out: Any = cpu_trainer(tmp_path, limit_predict_batches=1).predict(_probe(supcon_checkpoint), datamodule=dm)
        assert out[0]["features"].shape == (16, 128) and out[0]["logits"].shape == (16, 10)
        assert out[0]["labels"].shape == (16,)

    def test_own_checkpoint_is_kind_linear_probe(self, supcon_checkpoint: Path) -> None:
        checkpoint: dict = {}
        _probe(supcon_checkpoint).on_save_checkpoint(checkpoint)
        assert checkpoint["lightning_supcon"]["kind"] == "linear_probe"


class TestLinearProbeModuleErrors:
    def test_missing_file_names_the_path(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match=r"nowhere\.ckpt"):
            _probe(tmp_path / "nowhere.ckpt")

    def test_cross_entropy_checkpoint(self, tmp_path: Path) -> None:
        model = CrossEntropyModule(encoder="small_cnn", in_channels=1)
        trainer = cpu_trainer(tmp_path, max_steps=1, limit_val_batches=0)
        trainer.fit(model, datamodule=DigitsDataModule(batch_size=32, n_views=1))
        trainer.save_checkpoint(tmp_path / "ce.ckpt")
        with pytest.raises(
            ValueError, match=r"ce.ckpt' is not a SupCon checkpoint: it holds a 'cross_entropy' model; a cross-entropy"
        ):
            _probe(tmp_path / "ce.ckpt")

    def test_checkpoint_without_metadata(self, tmp_path: Path) -> None:
        path = _save(tmp_path / "plain.pt", {"state_dict": SupConModule(in_channels=1).state_dict()})
        with pytest.raises(ValueError, match="is not a SupCon checkpoint: it has no 'lightning_supcon' entry"):
            _probe(path)

    def test_linear_probe_checkpoint(self, tmp_path: Path) -> None:
        meta = {"kind": "linear_probe", "encoder": "small_cnn", "feature_dim": 128, "in_channels": 1}
        path = _save(tmp_path / "probe.ckpt", {"lightning_supcon": meta, "state_dict": {}})
        with pytest.raises(ValueError, match="holds a 'linear_probe' model; use the SupCon checkpoint the probe"):
            _probe(path)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"encoder": "resnet18"}, r"encoder='small_cnn', this model encoder='resnet18'"),
            ({"in_channels": 3}, r"in_channels=1, this model in_channels=3"),
        ],
    )
    def test_other_encoder(self, supcon_checkpoint: Path, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            _probe(supcon_checkpoint, **kwargs)

    def test_same_name_other_weights(self, tmp_path: Path) -> None:
        path = save_encoder(
            SupConModule(encoder=MLP(hidden=32), num_classes=4, online=OnlineEval(knn_k=0)), tmp_path / "mlp.pt"
        )
        with pytest.raises(ValueError, match=r"do not fit.*net\.1\.weight: \(32, 12\) vs \(8, 12\)"):
            LinearProbeModule(str(path), encoder=MLP(hidden=8), num_classes=4)

    def test_missing_weights(self, tmp_path: Path) -> None:
        model = SupConModule(encoder=MLP(), num_classes=4, online=OnlineEval(knn_k=0))
        meta = {"kind": "supcon", "encoder": "MLP", "feature_dim": 16, "in_channels": 3}
        state = {k: v for k, v in model.encoder.state_dict().items() if k != "net.3.bias"}
        path = _save(tmp_path / "partial.pt", {"lightning_supcon": meta, "state_dict": state})
        with pytest.raises(ValueError, match=r"missing \['net.3.bias'\]"):
            LinearProbeModule(str(path), encoder=MLP(), num_classes=4)


def test_exported_encoder_loads_with_weights_only(tmp_path: Path) -> None:
    model = SupConModule(encoder="small_cnn", in_channels=1, online=OnlineEval(knn_k=0))
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "full.ckpt")
    exported = export_encoder(tmp_path / "full.ckpt", tmp_path / "encoder.pt")
    file = torch.load(exported, map_location="cpu", weights_only=True)  # raises if anything but weights is inside
    assert file["lightning_supcon"]["kind"] == "supcon"
    assert file["state_dict"].keys() == model.encoder.state_dict().keys()
    meta, weights = load_encoder_checkpoint(exported)
    assert meta["in_channels"] == 1
    assert all(torch.equal(weights[k], v) for k, v in model.encoder.state_dict().items())


class TestFineTuning:
    """``freeze_encoder=False``: the encoder trains with the classifier (own learning rate, BatchNorm in train mode)."""

    def test_fit_changes_the_encoder_and_its_batchnorm_statistics(
        self, supcon_checkpoint: Path, tmp_path: Path
    ) -> None:
        probe = _probe(supcon_checkpoint, freeze_encoder=False, encoder_lr=0.05, retrieval=False)
        before = {k: v.clone() for k, v in probe.encoder.state_dict().items()}
        modes: list[bool] = []

        class RecordMode(pl.Callback):
            def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, *args: object) -> None:
                assert isinstance(module, LinearProbeModule)
                modes.append(all(m.training for m in module.encoder.modules()))

        trainer = cpu_trainer(
            tmp_path, max_steps=3, limit_val_batches=1, val_check_interval=2, callbacks=[RecordMode()]
        )
        trainer.fit(probe, datamodule=DigitsDataModule(batch_size=32, n_views=1))
        assert modes == [True, True, True]  # train mode on every step, also after validation
        after = probe.encoder.state_dict()
        weights = [k for k in before if k.endswith("weight")]
        assert weights and all(not torch.equal(after[k], before[k]) for k in weights)
        assert after["features.1.num_batches_tracked"].item() == before["features.1.num_batches_tracked"].item() + 3
        assert not torch.equal(after["features.1.running_mean"], before["features.1.running_mean"])
        groups = trainer.optimizers[0].param_groups
        encoder_ids = {id(p) for p in probe.encoder.parameters()}
        in_encoder = [g for g in groups if {id(p) for p in g["params"]} <= encoder_ids]
        assert {id(p) for g in in_encoder for p in g["params"]} == encoder_ids
        assert all(g["initial_lr"] == 0.05 for g in in_encoder)
        assert {g["initial_lr"] for g in groups if g not in in_encoder} == {0.1}  # the default SGD's
        assert [all(p.ndim <= 1 for p in g["params"]) for g in in_encoder] == [False, True]  # weights, then biases
        assert in_encoder[1]["weight_decay"] == 0.0

    def test_without_encoder_lr_the_encoder_shares_the_main_groups(self, supcon_checkpoint: Path) -> None:
        probe = _probe(supcon_checkpoint, freeze_encoder=False)
        assert probe.extra_param_groups() == []
        assert {id(p) for p in probe.optimized_parameters()} == {id(p) for p in probe.parameters()}

    def test_frozen_is_the_default(self, supcon_checkpoint: Path) -> None:
        probe = _probe(supcon_checkpoint)
        assert probe.freeze_encoder and probe.hparams["freeze_encoder"] is True
        assert {id(p) for p in probe.optimized_parameters()} == {id(p) for p in probe.classifier.parameters()}

    def test_gradients_reach_the_encoder(self, supcon_checkpoint: Path) -> None:
        probe = _probe(supcon_checkpoint, freeze_encoder=False).train()
        probe(torch.randn(4, 1, 16, 16)).sum().backward()
        assert all(p.grad is not None for p in probe.encoder.parameters())

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"encoder_lr": 0.01}, r"`encoder_lr` > 0 with `freeze_encoder=False`.*freeze_encoder=True"),
            ({"freeze_encoder": False, "encoder_lr": 0.0}, r"got encoder_lr=0.0 with freeze_encoder=False"),
        ],
    )
    def test_bad_encoder_lr(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            LinearProbeModule(encoder="small_cnn", in_channels=1, **kwargs)


def test_finetune_config_trains_the_encoder_from_the_command_line(
    supcon_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lightning-supcon fit --config configs/digits_finetune.yaml``: the encoder's weights and BN statistics move."""
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(ROOT / "configs" / "digits_finetune.yaml"), "--trainer.fast_dev_run=true"]
    app = cli([*args, f"--model.init_args.checkpoint={supcon_checkpoint}", "--data.init_args.label_fraction=0.1"])
    assert app.trainer.state.finished and app.model.hparams["freeze_encoder"] is False
    assert len(app.datamodule._dataset("train")) == 145  # round(0.1 x n) of each digit's 139-146 training images
    before, after = _encoder_state(supcon_checkpoint), app.model.encoder.state_dict()
    assert all(not torch.equal(after[k], before[k]) for k in before if k.endswith(("weight", "running_mean")))
    assert {g["initial_lr"] for g in app.trainer.optimizers[0].param_groups} == {0.1, 0.01}
