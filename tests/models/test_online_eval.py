"""OnlineEvaluation: probe and kNN as one component, used by SupConModule and CrossEntropyModule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torchmetrics import MetricCollection

from lightning_supcon import CrossEntropyModule, DigitsDataModule, OnlineEval
from lightning_supcon.metrics import knn_ood_score, ood_metrics
from lightning_supcon.models.online_eval import OnlineEvaluation
from tests.helpers import cpu_trainer


def _clusters(n: int = 40, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    return torch.eye(classes, 8)[labels] * 3 + 0.1 * torch.randn(n, 8, generator=gen), labels


class TestOnlineEvaluation:
    def test_knn_of_separable_clusters_is_exact(self) -> None:
        online = OnlineEvaluation(feature_dim=8, num_classes=4, probe=False, knn_k=3)
        features, labels = _clusters()
        online.eval_step(features[:20], labels[:20], "val")
        online.fill_bank(lambda x: x, [(features[20:], labels[20:])])
        assert online.knn_results("val") == {"val/knn_top1": torch.tensor(1.0)}
        assert online.knn_results("val") == {}  # reset after compute

    def test_probe_metrics_per_stage_are_collections(self) -> None:
        online = OnlineEvaluation(feature_dim=8, num_classes=10, knn_k=0)
        features, labels = _clusters(classes=8)
        metrics = online.eval_step(features, labels, "test")
        assert isinstance(metrics, MetricCollection)
        assert sorted(metrics.keys(keep_base=False)) == ["test/probe_top1", "test/probe_top5"]
        loss = online.training_step(features, labels)
        assert loss is not None and loss.requires_grad
        assert sorted(online.train_metrics.keys(keep_base=False)) == ["train/probe_top1"]

    def test_probe_group_and_detached_features(self) -> None:
        online = OnlineEvaluation(feature_dim=8, num_classes=4, probe_lr=0.3)
        (group,) = online.param_groups()
        assert group["lr"] == 0.3 and group["weight_decay"] == 0.0 and len(group["params"]) == 2
        features = torch.randn(4, 8, requires_grad=True)
        loss = online.training_step(features, torch.arange(4))
        assert loss is not None
        loss.backward()
        assert features.grad is None  # the probe never trains the encoder

    def test_collective_in_rank_local_branch_unlabelled_batch_still_returns_the_metrics(self) -> None:
        # A rank whose evaluation batches are all unknown (-1) must still log the probe metrics: Lightning computes
        # them at the epoch's end with a gather the other ranks join.
        online = OnlineEvaluation(feature_dim=8, num_classes=4, knn_k=3)
        features, labels = _clusters()
        metrics = online.eval_step(features, torch.full_like(labels, -1), "val")
        assert isinstance(metrics, MetricCollection) and not metrics["top1"].update_called
        assert online.knn is not None and online.knn.query_features == []  # nothing unknown became a query

    def test_off(self) -> None:
        online = OnlineEvaluation(feature_dim=8, num_classes=4, probe=False, knn_k=0)
        features, labels = _clusters()
        assert online.training_step(features, labels) is None
        assert online.eval_step(features, labels, "val") is None
        online.fill_bank(lambda x: x, [(features, labels)])
        assert online.knn_results("val") == {} and online.param_groups() == []

    @pytest.mark.parametrize(
        ("kwargs", "match"), [({"num_classes": 1}, "num_classes"), ({"knn_k": -1}, "knn_k"), ({"ood_k": -1}, "ood_k")]
    )
    def test_bad_arguments(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            OnlineEvaluation(**({"feature_dim": 8, "num_classes": 4} | kwargs))


def test_cross_entropy_module_uses_the_online_knn(tmp_path: Path) -> None:
    dm = DigitsDataModule(batch_size=64, n_views=1)
    model = CrossEntropyModule(
        encoder="small_cnn", in_channels=1, num_classes=10, online=OnlineEval(probe=False, knn_k=10)
    )
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=2, limit_test_batches=2)
    trainer.fit(model, datamodule=dm)
    assert {"val/knn_top1", "val/knn_top5", "val/top1"} <= set(trainer.callback_metrics)
    results = trainer.test(model, datamodule=dm, verbose=False)
    assert len(results) == 1 and {"test/knn_top1", "test/top1"} <= set(results[0])


def test_knn_bank_dtype_is_a_module_option() -> None:
    from lightning_supcon import SupConModule

    model = SupConModule(
        encoder="small_cnn", in_channels=1, num_classes=4, online=OnlineEval(knn_bank_dtype="bfloat16")
    )
    features, labels = _clusters()
    model.online.fill_bank(lambda x: x, [(features, labels)])
    assert model.online.knn is not None and model.online.knn.bank_features[0].dtype == torch.bfloat16
    assert SupConModule(online=OnlineEval(knn_k=5)).online.knn.bank_dtype is None  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"`bank_dtype` to be one of \('float32', 'float16', 'bfloat16'\)"):
        SupConModule(online=OnlineEval(knn_bank_dtype="int8"))  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_knn_with_tiny_uneven_sets_finishes_like_one_process(tmp_path: Path) -> None:
    from tests.helpers import run_worker

    script = Path(__file__).with_name("ddp_tiny_knn.py")
    results = []
    for devices in (1, 2):
        out = tmp_path / f"{devices}.pt"
        run_worker(script, str(devices), str(out), cwd=tmp_path)  # a hang times out
        results.append(torch.load(out, weights_only=True))
    assert results[0]["val/knn_top1"] == results[1]["val/knn_top1"]


def _multi_hot_clusters(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of 3 binary labels: each label moves its own coordinate; every label set, the empty one included."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([[(i >> bit) & 1 for bit in range(3)] for i in range(n)])
    return torch.cat([labels * 3.0, torch.zeros(n, 5)], dim=1) + 0.1 * torch.randn(n, 8, generator=gen), labels


class TestMultilabelOnlineEvaluation:
    def test_silent_failure_one_label_is_refused_in_one_line(self) -> None:
        # It passed the check and failed later inside torchmetrics' MultilabelF1Score.
        with pytest.raises(ValueError, match=r"^Expected `num_labels` >= 2 for multi-label metrics, but got 1;[^\n]*$"):
            OnlineEvaluation(feature_dim=4, num_classes=1, multilabel=True)

    def test_names_and_binary_cross_entropy(self) -> None:
        online = OnlineEvaluation(feature_dim=8, num_classes=3, knn_k=0, multilabel=True)
        features, labels = _multi_hot_clusters()
        loss = online.training_step(features, labels)
        assert online.probe is not None and loss is not None
        expected = torch.nn.functional.binary_cross_entropy_with_logits(online.probe(features), labels.float())
        torch.testing.assert_close(loss, expected)
        assert sorted(online.train_metrics.keys(keep_base=False)) == ["train/probe_accuracy", "train/probe_f1"]
        metrics = online.eval_step(features, labels, "val")
        assert metrics is not None
        assert sorted(metrics.keys(keep_base=False)) == ["val/probe_accuracy", "val/probe_f1", "val/probe_map"]

    def test_probabilities_not_logits_are_rated(self) -> None:
        # Logits in [0, 1] would be taken as probabilities by torchmetrics: all predicted positive at 0.5 without
        # the sigmoid; with it (sigmoid(0.4) > 0.5 and sigmoid(-0.6) < 0.5) the predictions follow the sign.
        online = OnlineEvaluation(feature_dim=2, num_classes=2, knn_k=0, multilabel=True)
        assert online.probe is not None
        with torch.no_grad():
            online.probe.weight.copy_(torch.eye(2))
            online.probe.bias.zero_()
        metrics = online.eval_step(torch.tensor([[0.4, -0.6], [-0.6, 0.4]]), torch.tensor([[1, 0], [0, 1]]), "val")
        assert metrics is not None and metrics["val/probe_accuracy"].compute() == 1.0

    def test_detach_false_trains_the_features(self) -> None:
        online = OnlineEvaluation(feature_dim=8, num_classes=3, knn_k=0, multilabel=True)
        features = _multi_hot_clusters()[0].requires_grad_(True)
        loss = online.training_step(features, _multi_hot_clusters()[1], detach=False)
        assert loss is not None
        loss.backward()
        assert features.grad is not None and features.grad.abs().sum() > 0

    @pytest.mark.filterwarnings("ignore:No positive samples")
    def test_knn_of_separable_label_sets_is_exact(self) -> None:
        online = OnlineEvaluation(feature_dim=8, num_classes=3, probe=False, knn_k=3, multilabel=True)
        features, labels = _multi_hot_clusters(n=48)
        online.eval_step(features[:16], labels[:16], "val")
        online.fill_bank(lambda x: x, [(features[16:], labels[16:])])
        results = online.knn_results("val")
        assert results == {"val/knn_map": 1.0, "val/knn_f1": 1.0, "val/knn_accuracy": 1.0}


class TestUnknownLabels:
    """Label -1 (unknown class, a partially labelled batch): the probe and the kNN leave the sample out."""

    def test_probe_loss_and_metrics_on_the_labelled_rows(self) -> None:
        online = OnlineEvaluation(feature_dim=8, num_classes=4, knn_k=0)
        features, labels = _clusters(n=8)
        partial = torch.where(torch.arange(8) % 2 == 0, labels, -1)
        loss = online.training_step(features, partial)
        assert online.probe is not None and loss is not None
        expected = torch.nn.functional.cross_entropy(online.probe(features[::2]), labels[::2])
        torch.testing.assert_close(loss, expected)
        assert online.train_metrics["train/probe_top1"].total == 4  # type: ignore[index]

    def test_a_batch_without_known_labels(self) -> None:
        online = OnlineEvaluation(feature_dim=8, num_classes=4, knn_k=3)
        features = torch.randn(4, 8, requires_grad=True)
        loss = online.training_step(features, torch.full((4,), -1))
        assert loss is not None and loss.item() == 0.0 and loss.requires_grad

    def test_knn_bank_and_queries_skip_unknown_samples(self) -> None:
        features, labels = _clusters()
        results = []
        for unknown in (False, True):
            online = OnlineEvaluation(feature_dim=8, num_classes=4, probe=False, knn_k=3)
            extra = features[:6] + 5.0 * torch.randn(6, 8)  # far off, labelled -1: must not count
            query = torch.cat([features[:20], extra]) if unknown else features[:20]
            query_labels = torch.cat([labels[:20], torch.full((6,), -1)]) if unknown else labels[:20]
            online.eval_step(query, query_labels, "val")
            bank_labels = torch.cat([labels[20:], torch.full((6,), -1)]) if unknown else labels[20:]
            bank = torch.cat([features[20:], extra]) if unknown else features[20:]
            online.fill_bank(lambda x: x, [(bank, bank_labels)])
            results.append(online.knn_results("val"))
        assert results[0] == results[1] == {"val/knn_top1": torch.tensor(1.0)}


def _exact_rows(n: int, seed: int) -> torch.Tensor:
    """``n`` rows drawn from a few directions whose L2 normalisation is exact in float32 (norms 1, 2 or 4, and
    scaled by powers of two), so many rows repeat: ties between bank entries, between queries, and between in- and
    out-of-distribution scores."""
    signs = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [-1, 1, 1, 1]])
    directions = torch.cat([torch.eye(4), signs, torch.eye(4) * 4])
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(directions), (n,), generator=gen)
    scales = 2.0 ** torch.randint(-1, 2, (n, 1), generator=gen)
    return directions[picks] * scales


class TestOnlineOOD:
    """The kNN OOD metrics of an epoch: evaluation samples in, the clean training set as bank, the OOD split out."""

    @staticmethod
    def _epoch(online: OnlineEvaluation, bank: torch.Tensor, inside: torch.Tensor, out: torch.Tensor) -> dict:
        labels = torch.arange(len(inside)) % 4
        partial = torch.where(torch.arange(len(inside)) % 3 == 0, -1, labels)  # unknown class: in-distribution too
        online.begin_epoch(ood_split=True)
        for part, part_labels in zip(inside.split(7), partial.split(7), strict=True):
            online.eval_step(part, part_labels, "val")
        bank_labels = torch.where(torch.arange(len(bank)) < 10, -1, torch.arange(len(bank)) % 4)
        online.fill_bank(lambda x: x, zip(bank.split(8), bank_labels.split(8), strict=True))
        online.score_ood(lambda x: x, [(part, torch.full((len(part),), -1)) for part in out.split(5)])
        return online.ood_results("val")

    @pytest.mark.parametrize("ood_k", [1, 5, 200])
    @pytest.mark.parametrize("knn_k", [0, 3])
    def test_equals_the_functional_reference_with_ties(self, ood_k: int, knn_k: int) -> None:
        inside, out = _exact_rows(23, 1), _exact_rows(11, 2)
        bank = torch.cat([out[:10], _exact_rows(30, 0)])  # the 10 unknown-class rows sit on out-of-distribution ones
        online = OnlineEvaluation(feature_dim=4, num_classes=4, probe=False, knn_k=knn_k, ood_k=ood_k)
        results = self._epoch(online, bank, inside, out)
        scores = knn_ood_score(torch.cat([inside, out]), bank, k=ood_k)  # every bank row, labelled or not
        expected = ood_metrics(scores[: len(inside)], scores[len(inside) :])
        assert 0 < expected["auroc"] < 1 and len(set(scores.tolist())) < len(scores)  # ties, and it can fail
        assert results.keys() == {f"val/ood_{name}" for name in expected}
        for name, value in expected.items():
            assert abs(results[f"val/ood_{name}"].item() - value.item()) <= 1e-12, name
        assert online.ood_results("val") == {}  # off until the next epoch begins

    @pytest.mark.parametrize("bank_dtype", [None, "bfloat16"])
    def test_the_bank_is_the_knns_own_tensors_when_a_batch_is_all_labelled(self, bank_dtype: str | None) -> None:
        features, labels = _clusters()
        online = OnlineEvaluation(8, 4, probe=False, knn_k=3, knn_bank_dtype=bank_dtype)  # type: ignore[arg-type]
        online.begin_epoch(ood_split=True)
        partial = torch.where(torch.arange(len(labels)) < 5, -1, labels)  # the first batch is partly unknown
        online.fill_bank(lambda x: x, zip(features.split(10), partial.split(10), strict=True))
        assert online.knn is not None and online.ood is not None
        knn, ood = online.knn.bank_features, online.ood.bank_features
        assert [len(t) for t in knn] == [5, 10, 10, 10] and [len(t) for t in ood] == [10, 10, 10, 10]
        assert knn[0].data_ptr() != ood[0].data_ptr()  # its own copy, with the unknown rows
        assert all(a.data_ptr() == b.data_ptr() for a, b in zip(knn[1:], ood[1:], strict=True))  # shared
        # The shared bank scores as the OOD metric's own: an OOD-only evaluation stores the same rows.
        alone = OnlineEvaluation(8, 4, probe=False, knn_k=0, knn_bank_dtype=bank_dtype)  # type: ignore[arg-type]
        alone.begin_epoch(ood_split=True)
        alone.fill_bank(lambda x: x, zip(features.split(10), partial.split(10), strict=True))
        assert alone.ood is not None
        assert all(torch.equal(a, b) for a, b in zip(ood, alone.ood.bank_features, strict=True))
        assert ood[0].dtype == (torch.bfloat16 if bank_dtype else torch.float32)

    def test_nothing_stored_or_read_without_an_ood_split(self) -> None:
        def unread() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            raise AssertionError("a pass that should not run")
            yield  # a generator: the body runs only when read

        features, labels = _clusters()
        online = OnlineEvaluation(feature_dim=8, num_classes=4, probe=False, knn_k=0)
        online.begin_epoch(ood_split=False)
        online.eval_step(features, labels, "val")
        online.fill_bank(lambda x: x, unread())  # no kNN and no OOD epoch: the bank is not read
        online.score_ood(lambda x: x, unread())
        assert online.ood is not None and online.ood.query_features == [] and online.ood_results("val") == {}

    def test_off_with_ood_k_0(self) -> None:
        online = OnlineEvaluation(feature_dim=8, num_classes=4, ood_k=0)
        online.begin_epoch(ood_split=True)
        assert online.ood is None and not online.ood_on and online.ood_results("val") == {}
        assert OnlineEvaluation.of(OnlineEval(ood_k=7), feature_dim=8, num_classes=4).ood.k == 7  # type: ignore[union-attr]

    def test_a_new_epoch_drops_an_interrupted_ones_queries(self) -> None:
        bank, inside, out = _exact_rows(40, 0), _exact_rows(23, 1), _exact_rows(11, 2)
        online = OnlineEvaluation(feature_dim=4, num_classes=4, probe=False, knn_k=0, ood_k=5)
        online.begin_epoch(ood_split=True)
        online.eval_step(out, torch.zeros(len(out), dtype=torch.long), "val")  # an epoch that never ended
        fresh = OnlineEvaluation(feature_dim=4, num_classes=4, probe=False, knn_k=0, ood_k=5)
        assert self._epoch(online, bank, inside, out) == self._epoch(fresh, bank, inside, out)


def test_old_checkpoints_without_ood_k_load_with_the_default(tmp_path: Path) -> None:
    from lightning_supcon import SupConModule

    model = SupConModule(encoder="small_cnn", in_channels=1, num_classes=4, online=OnlineEval(knn_k=0, ood_k=9))
    assert model.hparams["online"]["ood_k"] == 9  # recorded
    del model.hparams["online"]["ood_k"]  # as a checkpoint written before the option
    path = tmp_path / "old.ckpt"
    version = {"pytorch-lightning_version": pl.__version__}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)} | version, path)
    loaded = SupConModule.load_from_checkpoint(path, weights_only=True)
    assert loaded.online.ood is not None and loaded.online.ood.k == OnlineEval().ood_k == 50
