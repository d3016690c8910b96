"""label_fraction: a class-stratified, seeded subset of the training labels, resumable (DDP: test_sampler.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from lightning_supcon import OnlineEval
from lightning_supcon.data import DigitsDataModule
from lightning_supcon.data.labels import LabelledDataset
from lightning_supcon.data.subsets import label_subset, stratified_subset

LONG_TAIL = np.repeat(np.arange(5), [1000, 300, 40, 5, 1])  # 1,346 samples, classes of 1,000 down to 1


def _reference_counts(labels: np.ndarray, fraction: float) -> list[int]:
    """Per class, from the definition: round(fraction * n_class), at least 1, at most n_class."""
    return [min(n, max(1, int(np.floor(fraction * n + 0.5)))) for n in np.bincount(labels)]


class TestStratifiedSubset:
    @pytest.mark.parametrize("fraction", [0.001, 0.01, 0.1, 0.5, 1.0])
    @pytest.mark.parametrize("labels", [LONG_TAIL, np.repeat(np.arange(100), 7)], ids=["long_tail", "100_classes"])
    def test_per_class_counts(self, labels: np.ndarray, fraction: float) -> None:
        subset = stratified_subset(labels, fraction, seed=3)
        assert np.bincount(labels[subset], minlength=labels.max() + 1).tolist() == _reference_counts(labels, fraction)
        assert len(set(subset.tolist())) == len(subset) and (np.diff(subset) > 0).all()  # distinct, sorted

    def test_scikit_learn_would_drop_a_class(self) -> None:
        """Why our own: the whole-set allocation of ``train_test_split(stratify=...)`` leaves class 3 (5 samples)
        with none at 1%, and refuses class 4 (1 sample) outright."""
        from sklearn.model_selection import train_test_split

        labels = LONG_TAIL[LONG_TAIL < 4]
        picked, _ = train_test_split(np.arange(len(labels)), train_size=0.01, stratify=labels, random_state=0)
        assert np.bincount(labels[picked], minlength=4)[3] == 0
        assert np.bincount(labels[stratified_subset(labels, 0.01)], minlength=4)[3] == 1

    def test_fixed_by_the_seed(self) -> None:
        a, b = stratified_subset(LONG_TAIL, 0.1, seed=0), stratified_subset(LONG_TAIL, 0.1, seed=0)
        assert np.array_equal(a, b)
        assert not np.array_equal(a, stratified_subset(LONG_TAIL, 0.1, seed=1))
        torch.manual_seed(123)
        np.random.seed(123)  # the global generators play no part
        assert np.array_equal(a, stratified_subset(LONG_TAIL, 0.1, seed=0))

    def test_nested_over_fractions(self) -> None:
        small, large = stratified_subset(LONG_TAIL, 0.01, seed=2), stratified_subset(LONG_TAIL, 0.1, seed=2)
        assert set(small.tolist()) <= set(large.tolist())

    def test_unknown_labels_are_never_picked(self) -> None:
        labels = np.array([-1] * 10 + [0] * 10 + [1] * 10)
        subset = stratified_subset(labels, 0.5)
        assert (labels[subset] >= 0).all() and np.bincount(labels[subset]).tolist() == [5, 5]

    @pytest.mark.parametrize(
        ("labels", "fraction", "match"),
        [
            ([0, 1], 0.0, r"`label_fraction` in \(0, 1\], but got 0.0"),
            ([0, 1], 1.5, r"`label_fraction` in \(0, 1\], but got 1.5"),
            ([[0, 1], [1, 0]], 0.5, r"shape \(N,\).*got shape \(2, 2\).*multi-label"),
            ([0, -2], 0.5, r"labels >= 0 \(or -1 for unknown\), but got -2"),
        ],
    )
    def test_errors(self, labels: Any, fraction: float, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            stratified_subset(labels, fraction)


class TestLabelSubset:
    def test_keeps_the_samples_with_their_own_labels(self) -> None:
        data = LabelledDataset(torch.arange(40).float(), torch.arange(40) % 4)
        subset = label_subset(data, 0.25, seed=1)
        picked = subset.images.indices  # type: ignore[attr-defined]
        assert len(subset) == 12 and np.array_equal(picked, stratified_subset(np.arange(40) % 4, 0.25, seed=1))
        assert [subset[i] for i in range(12)] == [(data[int(j)][0], int(j) % 4) for j in picked]
        assert subset.labels.tolist() == [int(j) % 4 for j in picked]

    def test_unknown_keeps_every_sample(self) -> None:
        data = LabelledDataset(torch.arange(8).float(), [0, 0, 0, 0, 1, 1, 1, 1])
        partial = label_subset(data, 0.5, seed=0, unlabelled="unknown")
        picked = stratified_subset(data.labels, 0.5, seed=0)
        expected = [int(data.labels[i]) if i in picked else -1 for i in range(8)]
        assert partial.labels.tolist() == expected == [partial[i][1] for i in range(8)]


class TestDataModuleLabelFraction:
    def test_training_split_only(self) -> None:
        dm = DigitsDataModule(batch_size=8, image_size=8, label_fraction=0.1, subset_seed=5)
        full = DigitsDataModule(batch_size=8, image_size=8)
        labels = full.dataset("train").labels
        train = dm._present("train")
        assert np.array_equal(train.images.indices, stratified_subset(labels, 0.1, seed=5))  # type: ignore[attr-defined]
        assert np.bincount(train.labels).tolist() == _reference_counts(labels, 0.1)
        assert len(dm.train_eval_dataloader().dataset) == len(train)  # the kNN bank: the labelled subset
        assert dm._dataset("val") is dm.dataset("val")  # evaluation on the whole validation set

    def test_the_subset_does_not_follow_the_run_seed(self) -> None:
        a, b = DigitsDataModule(image_size=8, label_fraction=0.1), DigitsDataModule(image_size=8, label_fraction=0.1)
        a.seed, b.seed = 1, 2
        assert np.array_equal(a._present("train").labels, b._present("train").labels)
        assert np.array_equal(a._present("train").images.indices, b._present("train").images.indices)  # type: ignore[attr-defined]

    def test_bad_fraction(self) -> None:
        with pytest.raises(ValueError, match=r"`label_fraction` in \(0, 1\], but got 0"):
            DigitsDataModule(label_fraction=0)

    @pytest.mark.parametrize("sampler", ["random", "balanced"])
    def test_resume_mid_epoch(self, sampler: str) -> None:
        def loader() -> Any:
            dm = DigitsDataModule(batch_size=16, image_size=8, label_fraction=0.5, sampler=sampler)  # type: ignore[arg-type]
            dm.seed = 7
            return dm.train_dataloader()

        full = list(loader())
        first = loader()
        iterator = iter(first)
        for _ in range(3):
            next(iterator)
        resumed = loader()
        resumed.load_state_dict(first.state_dict())
        rest = list(resumed)
        assert len(rest) == len(full) - 3
        for (views, labels), (full_views, full_labels) in zip(rest, full[3:], strict=True):
            assert torch.equal(labels, full_labels) and torch.equal(views, full_views)


# The same subset on every DDP rank (2 gloo processes): tests/data/test_sampler.py, in the one spawn of both.


class TestSemiSupervised:
    """``unlabelled="unknown"``: every training sample stays, those outside the subset labelled -1 (issue 17, 3)."""

    def test_the_other_samples_are_kept_as_unknown(self) -> None:
        dm = DigitsDataModule(batch_size=8, image_size=8, label_fraction=0.1, subset_seed=5, unlabelled="unknown")
        labels = DigitsDataModule(image_size=8).dataset("train").labels
        picked = stratified_subset(labels, 0.1, seed=5)
        train = dm._present("train")
        expected = np.full(len(labels), -1)
        expected[picked] = labels[picked]  # the same labelled samples as the dropping mode
        assert np.array_equal(train.labels, expected)
        assert [int(train[i][1]) for i in range(20)] == expected[:20].tolist()
        batch_labels = torch.cat([labels for _, labels in dm.train_dataloader()])
        assert (batch_labels == -1).float().mean() > 0.85  # about 90% of the batches' samples are unlabelled

    def test_trains_supcon_on_ten_percent_of_the_labels(self, tmp_path: Any) -> None:
        from lightning_supcon import SupConModule
        from tests.helpers import cpu_trainer

        dm = DigitsDataModule(batch_size=128, image_size=8, label_fraction=0.1, unlabelled="unknown")
        model = SupConModule(encoder="small_cnn", in_channels=1, num_classes=10, online=OnlineEval(knn_k=5))
        trainer = cpu_trainer(
            tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0
        )
        trainer.fit(model, dm)
        metrics = trainer.callback_metrics
        # fully labelled, nearly every anchor of 128 over 10 classes has a class positive; here at most the ~10%
        assert torch.isfinite(metrics["train/loss"]) and metrics["train/anchors_with_class_positives"] <= 0.2
        assert "val/knn_top1" in metrics

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match="`unlabelled` to be one of"):
            DigitsDataModule(label_fraction=0.1, unlabelled="keep")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="class-balanced sampler draws classes"):
            DigitsDataModule(label_fraction=0.1, unlabelled="unknown", sampler="balanced")
