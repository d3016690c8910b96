"""anchors_with_class_positives: the fraction of anchors with a positive from another sample, and its log key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_supcon import OnlineEval, SupConModule
from lightning_supcon.models.class_positives import anchors_with_class_positives
from tests.helpers import cpu_trainer
from tests.models.test_supcon_module import MLP


def _reference(labels: Tensor) -> float:
    """From the definition, one anchor at a time: another sample with the same known class (or a shared label)."""
    rows = labels.tolist()
    if not rows:
        return 0.0

    def positive(a: object, b: object) -> bool:
        if isinstance(a, list) and isinstance(b, list):
            return any(x > 0 and y > 0 for x, y in zip(a, b, strict=True))
        return a == b and isinstance(a, int) and a >= 0

    return sum(any(positive(rows[i], rows[j]) for j in range(len(rows)) if j != i) for i in range(len(rows))) / len(
        rows
    )


class TestAnchorsWithClassPositives:
    @pytest.mark.parametrize("seed", range(5))
    @pytest.mark.parametrize("classes", [2, 10, 100])
    def test_class_labels_with_unknowns_match_the_loop(self, seed: int, classes: int) -> None:
        labels = torch.randint(-1, classes, (32,), generator=torch.Generator().manual_seed(seed))
        assert anchors_with_class_positives(labels).item() == pytest.approx(_reference(labels))

    @pytest.mark.parametrize("seed", range(3))
    def test_multi_hot_labels_match_the_loop(self, seed: int) -> None:
        labels = (torch.rand(16, 6, generator=torch.Generator().manual_seed(seed)) < 0.15).long()
        assert anchors_with_class_positives(labels).item() == pytest.approx(_reference(labels))

    def test_edge_cases(self) -> None:
        assert anchors_with_class_positives(torch.arange(8)).item() == 0.0  # all distinct: own views only
        assert anchors_with_class_positives(torch.zeros(8, dtype=torch.long)).item() == 1.0
        assert anchors_with_class_positives(torch.full((4,), -1)).item() == 0.0  # unknown labels match nothing
        assert anchors_with_class_positives(torch.zeros(0, dtype=torch.long)).item() == 0.0
        assert anchors_with_class_positives(torch.tensor([3])).item() == 0.0

    def test_bad_shape(self) -> None:
        with pytest.raises(ValueError, match=r"shape \(B,\) or \(B, C\), but got \(2, 2, 2\)"):
            anchors_with_class_positives(torch.zeros(2, 2, 2))


@pytest.mark.parametrize(("supervised", "expected"), [(True, 0.5), (False, 0.0)])
def test_supcon_module_logs_it(tmp_path: Path, supervised: bool, expected: float) -> None:
    labels = torch.tensor([0, 0, 1, 2] * 2)  # each batch of 4: two anchors with a class positive
    loader = DataLoader(TensorDataset(torch.randn(8, 2, 12), labels), batch_size=4)
    model = SupConModule(
        encoder=MLP(), feature_dim=16, num_classes=4, supervised=supervised, online=OnlineEval(knn_k=0, probe=False)
    )
    trainer = cpu_trainer(tmp_path, max_steps=2)
    trainer.fit(model, train_dataloaders=loader)
    assert trainer.callback_metrics["train/anchors_with_class_positives"].item() == expected
