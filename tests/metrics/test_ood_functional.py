"""OOD scores and metrics: exact AUROC / AUPR / FPR95 against scikit-learn on heavily tied data, and loop references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torch import Tensor

from lightning_supcon.metrics.ood_functional import (
    OOD_METRIC_NAMES,
    energy_score,
    knn_ood_score,
    msp_score,
    ood_metrics,
)


def _scores(n_in: int, n_out: int, levels: int, seed: int) -> tuple[Tensor, Tensor]:
    """Integer scores in ``[0, levels)``, the in-distribution ones shifted up by one level: many ties across sets."""
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randint(levels, (n_in,), generator=gen).double() + 1,
        torch.randint(levels, (n_out,), generator=gen).double(),
    )


def _sklearn(in_scores: Tensor, out_scores: Tensor) -> dict[str, float]:
    y = np.r_[np.ones(len(in_scores)), np.zeros(len(out_scores))]
    s = np.r_[in_scores.numpy(), out_scores.numpy()]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return {
        "auroc": roc_auc_score(y, s),
        "aupr_in": average_precision_score(y, s),
        "aupr_out": average_precision_score(1 - y, -s),
        "fpr95": fpr[np.argmax(tpr >= 0.95)],
    }


def _loop_reference(in_scores: Tensor, out_scores: Tensor) -> dict[str, float]:
    """From the definitions: AUROC as P(s_in > s_out) + P(tie) / 2 over all pairs; FPR95 over every threshold."""
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a in in_scores.tolist() for b in out_scores.tolist()]
    fpr95 = math.inf
    for threshold in sorted(set(in_scores.tolist() + out_scores.tolist()), reverse=True):
        tpr = sum(s >= threshold for s in in_scores.tolist()) / len(in_scores)
        if tpr >= 0.95:
            fpr95 = sum(s >= threshold for s in out_scores.tolist()) / len(out_scores)
            break
    return {"auroc": sum(pairs) / len(pairs), "fpr95": fpr95}


CASES = [
    pytest.param(*_scores(300, 200, 5, 0), id="5-levels"),
    pytest.param(*_scores(57, 91, 3, 1), id="3-levels"),
    pytest.param(*_scores(40, 40, 40, 2), id="40-levels"),
    pytest.param(*_scores(1000, 30, 2, 3), id="2-levels"),
    pytest.param(torch.full((7,), 0.5), torch.full((4,), 0.5), id="all-tied"),
    pytest.param(torch.tensor([1.0]), torch.tensor([0.0]), id="1-1-separated"),
    pytest.param(torch.tensor([0.0]), torch.tensor([1.0]), id="1-1-reversed"),
    pytest.param(torch.tensor([2.0]), torch.tensor([2.0, 1.0]), id="1-2-tie"),
    pytest.param(torch.tensor([3.0, 1.0]), torch.tensor([1.0]), id="2-1-tie"),
    pytest.param(torch.randn(500, dtype=torch.float64) + 1, torch.randn(300, dtype=torch.float64), id="no-ties"),
]


class TestOodMetrics:
    @pytest.mark.parametrize(("in_scores", "out_scores"), CASES)
    def test_equals_scikit_learn(self, in_scores: Tensor, out_scores: Tensor) -> None:
        ours = ood_metrics(in_scores, out_scores)
        assert tuple(ours) == OOD_METRIC_NAMES
        expected = _sklearn(in_scores, out_scores)
        for name in OOD_METRIC_NAMES:
            assert ours[name].item() == pytest.approx(expected[name], abs=1e-12), name

    @pytest.mark.parametrize(("in_scores", "out_scores"), CASES)
    def test_equals_the_pairwise_definition(self, in_scores: Tensor, out_scores: Tensor) -> None:
        ours = ood_metrics(in_scores, out_scores)
        expected = _loop_reference(in_scores, out_scores)
        assert ours["auroc"].item() == pytest.approx(expected["auroc"], abs=1e-12)
        assert ours["fpr95"].item() == expected["fpr95"]

    def test_the_order_of_the_samples_does_not_matter(self) -> None:
        in_scores, out_scores = _scores(100, 80, 4, 5)
        flipped = ood_metrics(in_scores.flip(0), out_scores.flip(0))
        assert flipped == ood_metrics(in_scores, out_scores)

    def test_all_tied_is_chance(self) -> None:
        metrics = ood_metrics(torch.zeros(3), torch.zeros(5))
        assert {name: value.item() for name, value in metrics.items()} == {
            "auroc": 0.5,
            "aupr_in": 3 / 8,
            "aupr_out": 5 / 8,
            "fpr95": 1.0,
        }

    def test_the_first_threshold_reaching_95_percent_not_the_nearest(self) -> None:
        # 20 pairs of tied (in, out) scores: every threshold adds one of each, the ROC points are collinear.
        # The first threshold with TPR >= 0.95 accepts 19 of each: FPR95 = 0.95. roc_curve's default
        # drop_intermediate=True (OpenOOD's call) drops that collinear point and would report 1.0.
        scores = torch.arange(20, dtype=torch.float64)
        assert ood_metrics(scores, scores)["fpr95"].item() == 0.95
        fpr, tpr, _ = roc_curve(np.r_[np.ones(20), np.zeros(20)], np.r_[scores.numpy(), scores.numpy()])
        assert fpr[np.argmax(tpr >= 0.95)] == 1.0

    @pytest.mark.parametrize(
        ("in_scores", "out_scores", "match"),
        [
            (torch.zeros(0), torch.zeros(3), r"`in_scores` of shape \(n,\) with n >= 1 .* but got \(0,\)"),
            (torch.zeros(3), torch.zeros(0), r"`out_scores` of shape \(n,\) with n >= 1 .* but got \(0,\)"),
            (torch.zeros(3, 1), torch.zeros(3), r"`in_scores` of shape \(n,\) .* but got \(3, 1\)"),
            (torch.zeros(3), torch.tensor([0.0, math.nan]), "`out_scores` without NaN, but got 1 NaN scores"),
        ],
    )
    def test_refuses_bad_inputs_in_one_line(self, in_scores: Tensor, out_scores: Tensor, match: str) -> None:
        with pytest.raises(ValueError, match=match) as err:
            ood_metrics(in_scores, out_scores)
        assert "\n" not in str(err.value)


class TestLogitScores:
    def test_msp_is_the_largest_softmax_probability(self) -> None:
        logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
        expected = [max(math.exp(v) for v in row) / sum(math.exp(v) for v in row) for row in logits.tolist()]
        assert msp_score(logits).tolist() == pytest.approx(expected, abs=1e-6)

    @pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
    def test_energy_is_minus_the_free_energy(self, temperature: float) -> None:
        logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        expected = [temperature * math.log(sum(math.exp(v / temperature) for v in row)) for row in logits.tolist()]
        assert energy_score(logits, temperature).tolist() == pytest.approx(expected, abs=1e-12)

    def test_large_logits_stay_finite(self) -> None:
        logits = torch.tensor([[1000.0, 0.0], [0.0, 0.0]], dtype=torch.float16)
        assert energy_score(logits).tolist() == pytest.approx([1000.0, math.log(2)], abs=1e-4)
        assert msp_score(logits).tolist() == [1.0, 0.5]

    @pytest.mark.parametrize("score", [msp_score, energy_score])
    def test_refuses_logits_that_are_not_2d(self, score: object) -> None:
        with pytest.raises(ValueError, match=r"`logits` of shape \(Q, C\) with C >= 1, but got \(4,\)"):
            score(torch.zeros(4))  # type: ignore[operator]

    def test_refuses_a_temperature_that_is_not_positive(self) -> None:
        with pytest.raises(ValueError, match=r"`temperature` to be > 0, but got 0\.0"):
            energy_score(torch.zeros(2, 3), temperature=0.0)


def _brute_kth_distance(query: Tensor, bank: Tensor, k: int) -> Tensor:
    """A loop over queries: distances of the normalised query to every normalised bank entry, sorted, the k-th."""
    q = query.double() / query.double().norm(dim=1, keepdim=True)
    b = bank.double() / bank.double().norm(dim=1, keepdim=True)
    return torch.stack([-((b - row).norm(dim=1).sort().values[min(k, len(b)) - 1]) for row in q])


class TestKnnOodScore:
    @pytest.mark.parametrize("k", [1, 5, 50, 1000])
    def test_equals_the_brute_force_distance(self, k: int) -> None:
        gen = torch.Generator().manual_seed(k)
        bank, query = torch.randn(300, 8, generator=gen).double(), torch.randn(40, 8, generator=gen).double()
        assert torch.allclose(knn_ood_score(query, bank, k=k), _brute_kth_distance(query, bank, k), atol=1e-12, rtol=0)

    def test_float32_features_to_float32_precision(self) -> None:
        gen = torch.Generator().manual_seed(0)
        bank, query = torch.randn(200, 16, generator=gen), torch.randn(30, 16, generator=gen)
        assert torch.allclose(knn_ood_score(query, bank, k=7), _brute_kth_distance(query, bank, 7), atol=1e-6)

    def test_duplicates_in_the_bank_are_neighbours_each(self) -> None:
        bank = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])  # two entries in the same direction
        scores = knn_ood_score(torch.tensor([[1.0, 0.0]]), bank, k=3)
        assert knn_ood_score(torch.tensor([[1.0, 0.0]]), bank, k=2).item() == 0.0
        assert scores.item() == pytest.approx(-math.sqrt(2), abs=1e-12)

    def test_blocks_give_the_same_bits(self) -> None:
        gen = torch.Generator().manual_seed(3)
        bank = torch.randint(-1, 2, (97, 3), generator=gen).float()
        bank[bank.abs().sum(dim=1) == 0] = 1.0
        query = torch.randint(-1, 2, (23, 3), generator=gen).float() + 0.5
        whole = knn_ood_score(query, bank, k=10)
        assert torch.equal(knn_ood_score(query, bank, k=10, chunk_size=4, bank_chunk_size=7), whole)

    @pytest.mark.parametrize(
        ("query", "bank", "k", "match"),
        [
            (torch.zeros(2, 3), torch.zeros(0, 3), 5, "non-empty `bank`, but got 0 entries"),
            (torch.zeros(2, 3), torch.zeros(4, 2), 5, r"the same D, but got \(2, 3\) and \(4, 2\)"),
            (torch.zeros(2, 3), torch.zeros(4, 3), 0, "`k` to be a positive integer, but got 0"),
        ],
    )
    def test_refuses_bad_inputs(self, query: Tensor, bank: Tensor, k: int, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            knn_ood_score(query, bank, k=k)
