"""Label checks of both kinds and the classifier loss of each, against references written from their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_supcon.models.labels import check_labels, classifier_loss, known


class TestCheckLabels:
    def test_accepts_both_kinds(self) -> None:
        check_labels(torch.tensor([0, 2]), batch_size=2, num_classes=3)
        check_labels(torch.tensor([[0, 1, 1], [0, 0, 0]]), batch_size=2, num_classes=3, multilabel=True)
        check_labels(torch.tensor([[1.0, 0.0, 1.0]]), batch_size=1, num_classes=3, multilabel=True)

    @pytest.mark.parametrize(
        ("labels", "multilabel", "match"),
        [
            (torch.tensor([[0, 1, 1], [1, 0, 0]]), False, r"shape \(2,\), but got \(2, 3\). Multi-hot labels need"),
            (torch.tensor([0, 1]), True, r"shape \(2, 3\), but got \(2,\). Class labels need `multilabel=False`"),
            (torch.tensor([[0, 1], [1, 0]]), True, r"shape \(2, 3\), but got \(2, 2\).$"),
            (torch.tensor([[0, 2, 1], [1, 0, 0]]), True, r"must be 0 or 1, but got values in \[0, 1, 2\]"),
            (torch.tensor([[0, 0.5, 1], [1, 0, 0]]), True, r"must be 0 or 1"),
            (torch.tensor([0, -1]), False, r"\[0, num_classes=3\), but got values in \[-1, 0\]"),
        ],
    )
    def test_rejects(self, labels: torch.Tensor, multilabel: bool, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            check_labels(labels, batch_size=2, num_classes=3, multilabel=multilabel)


def _binary_cross_entropy_loop(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """``-mean_{n, l} [y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))]``, one pair at a time."""
    total = 0.0
    for x, y in zip(logits.flatten().tolist(), targets.flatten().tolist(), strict=True):
        p = 1.0 / (1.0 + math.exp(-x))
        total -= y * math.log(p) + (1.0 - y) * math.log(1.0 - p)
    return total / logits.numel()


class TestClassifierLoss:
    @pytest.mark.parametrize("smoothing", [0.0, 0.2])
    def test_multilabel_is_binary_cross_entropy_per_label(self, smoothing: float) -> None:
        gen = torch.Generator().manual_seed(0)
        logits = torch.randn(5, 4, generator=gen, dtype=torch.float64)
        labels = torch.randint(0, 2, (5, 4), generator=gen)
        targets = labels.double() * (1 - smoothing) + smoothing / 2
        expected = _binary_cross_entropy_loop(logits, targets)
        got = classifier_loss(logits, labels, multilabel=True, label_smoothing=smoothing)
        assert got.item() == pytest.approx(expected, rel=1e-12)

    def test_single_label_is_cross_entropy(self) -> None:
        logits, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
        expected = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
        torch.testing.assert_close(classifier_loss(logits, labels, label_smoothing=0.1), expected)


class TestUnknownLabels:
    def test_minus_one_only_where_allowed(self) -> None:
        check_labels(torch.tensor([-1, 2]), batch_size=2, num_classes=3, allow_unknown=True)
        with pytest.raises(ValueError, match=r"\[-1, num_classes=3\), but got values in \[-2, 2\]"):
            check_labels(torch.tensor([-2, 2]), batch_size=2, num_classes=3, allow_unknown=True)
        with pytest.raises(ValueError, match=r"\[0, num_classes=3\)"):
            check_labels(torch.tensor([-1, 2]), batch_size=2, num_classes=3)

    def test_known_rows(self) -> None:
        assert known(torch.tensor([3, -1, 0, -1])).tolist() == [True, False, True, False]
        assert known(torch.tensor([[0, 0], [1, 0]])).tolist() == [True, True]  # an empty label set is known
