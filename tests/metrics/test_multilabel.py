"""Multi-label metrics: one inclusive decision rule ``p >= 0.5``, against a loop written from the definitions."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lightning_supcon.metrics.multilabel import THRESHOLD, multilabel_metrics, predicted_labels


def _reference(probabilities: Tensor, targets: Tensor) -> dict[str, float]:
    """Label accuracy (micro) and macro F1 of the rule ``p >= 0.5``, one (sample, label) pair at a time."""
    num, labels = targets.shape
    right, f1s = 0, []
    for label in range(labels):
        tp = fp = fn = 0
        for sample in range(num):
            predicted, actual = float(probabilities[sample, label]) >= 0.5, bool(targets[sample, label])
            right += int(predicted == actual)
            tp, fp, fn = tp + (predicted and actual), fp + (predicted and not actual), fn + (actual and not predicted)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": right / (num * labels), "f1": sum(f1s) / labels}


class TestInclusiveThreshold:
    def test_inclusive_threshold_probability_one_half_predicts_the_label(self) -> None:
        # Documented as p >= 0.5; torchmetrics alone applies p > 0.5 and scores 0.5 here.
        metrics = multilabel_metrics(2, ranking=False)
        values = metrics(torch.tensor([[0.5, 0.9]]), torch.tensor([[1, 1]]))
        assert {name: value.item() for name, value in values.items()} == {"accuracy": 1.0, "f1": 1.0}

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_rule_at_the_boundary(self, dtype: torch.dtype) -> None:
        below = torch.nextafter(torch.tensor(THRESHOLD, dtype=dtype), torch.tensor(0.0, dtype=dtype))
        assert predicted_labels(torch.stack([below, torch.tensor(THRESHOLD, dtype=dtype)])).tolist() == [0, 1]

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_matches_the_loop_reference(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        # Probabilities on a grid of quarters, so many lie exactly on the threshold.
        probabilities = torch.randint(0, 5, (12, 4), generator=gen).float() / 4
        targets = torch.randint(0, 2, (12, 4), generator=gen)
        values = multilabel_metrics(4, ranking=False)(probabilities, targets)
        for name, expected in _reference(probabilities, targets).items():
            assert values[name].item() == pytest.approx(expected, abs=1e-6), name
