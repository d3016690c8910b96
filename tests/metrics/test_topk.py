"""Top-k accuracy: ranks against a loop that sorts classes by score then index; ties, allowed classes, states."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from lightning_supcon.metrics.topk import TopKAccuracy, topk_correct, true_class_rank


def _reference_rank(scores: Tensor, target: Tensor) -> list[int]:
    """Classes sorted by score, highest first, then by class index: the position of the true class."""
    ranks = []
    for q in range(scores.shape[0]):
        order = sorted(range(scores.shape[1]), key=lambda c: (-float(scores[q, c]), c))
        ranks.append(order.index(int(target[q])))
    return ranks


def _tied_scores(n: int, classes: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Scores with many exact ties (a few integer levels) and random targets."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, (n, classes), generator=gen).float(), torch.randint(classes, (n,), generator=gen)


class TestTrueClassRank:
    @pytest.mark.parametrize("classes", [1, 4, 10])
    def test_matches_reference_with_ties(self, classes: int) -> None:
        scores, target = _tied_scores(50, classes)
        assert true_class_rank(scores, target).tolist() == _reference_rank(scores, target)

    def test_all_tied_ranks_by_index(self) -> None:
        assert true_class_rank(torch.zeros(10, 10), torch.arange(10)).tolist() == list(range(10))


class TestTopkCorrect:
    @pytest.mark.parametrize("k", [1, 2, 5])
    def test_matches_reference(self, k: int) -> None:
        scores, target = _tied_scores(60, 7, seed=1)
        expected = [rank < k for rank in _reference_rank(scores, target)]
        assert topk_correct(scores, target, k).tolist() == expected

    def test_top1_agrees_with_argmax_and_topk_is_nested(self) -> None:
        scores, target = _tied_scores(200, 10, seed=2)
        assert torch.equal(topk_correct(scores, target, 1), scores.argmax(dim=1) == target)
        for k in range(1, 10):
            assert not (topk_correct(scores, target, k) & ~topk_correct(scores, target, k + 1)).any()

    def test_all_tied_top5_is_classes_0_to_4(self) -> None:
        assert topk_correct(torch.zeros(10, 10), torch.arange(10), 5).tolist() == [True] * 5 + [False] * 5

    def test_disallowed_true_class_is_never_correct(self) -> None:
        scores = torch.tensor([[3.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
        allowed = scores > 0
        assert topk_correct(scores, torch.tensor([0, 2]), 3, allowed=allowed).tolist() == [True, False]
        assert topk_correct(scores, torch.tensor([0, 2]), 3).tolist() == [True, True]

    @pytest.mark.parametrize(
        ("scores", "target", "k", "allowed", "match"),
        [
            (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 0, None, "`k` to be a positive integer"),
            (torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), 1, None, r"\(N, C\) and `target` \(N,\)"),
            (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 1, torch.ones(2, 2, dtype=torch.bool), "allowed"),
        ],
    )
    def test_rejects_bad_input(self, scores: Tensor, target: Tensor, k: int, allowed: Tensor, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            topk_correct(scores, target, k, allowed=allowed)


class TestTopKAccuracy:
    def test_all_tied_top1_is_within_top5(self) -> None:
        """torchmetrics credits classes 5-9 for top-5 of all-equal scores, and class 0 for top-1."""
        top1, top5 = TopKAccuracy(10, top_k=1), TopKAccuracy(10, top_k=5)
        top1.update(torch.zeros(1, 10), torch.tensor([0]))
        top5.update(torch.zeros(1, 10), torch.tensor([0]))
        assert top1.compute() == 1.0 and top5.compute() == 1.0
        top5.reset()
        top5.update(torch.zeros(1, 10), torch.tensor([9]))
        assert top5.compute() == 0.0

    @pytest.mark.parametrize("top_k", [1, 3, 5])
    def test_equals_torchmetrics_without_ties(self, top_k: int) -> None:
        gen = torch.Generator().manual_seed(3)
        ours, theirs = TopKAccuracy(10, top_k=top_k), MulticlassAccuracy(10, top_k=top_k, average="micro")
        for _ in range(3):
            logits, target = torch.randn(17, 10, generator=gen), torch.randint(10, (17,), generator=gen)
            ours.update(logits, target)
            theirs.update(logits, target)
        torch.testing.assert_close(ours.compute(), theirs.compute())

    def test_over_several_updates_and_merge(self) -> None:
        scores, target = _tied_scores(40, 6, seed=4)
        expected = sum(rank < 2 for rank in _reference_rank(scores, target)) / 40
        first, second = TopKAccuracy(6, top_k=2), TopKAccuracy(6, top_k=2)
        first.update(scores[:25], target[:25])
        second.update(scores[25:], target[25:])
        first.merge_state(second)  # what the sum reduction over processes does
        assert first.compute().item() == pytest.approx(expected)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [({"num_classes": 0}, "`num_classes` to be a positive integer"), ({"top_k": 4}, r"`top_k` in \[1, 3\]")],
    )
    def test_rejects_bad_arguments(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            TopKAccuracy(**({"num_classes": 3} | kwargs))

    def test_rejects_bad_update(self) -> None:
        metric = TopKAccuracy(3)
        with pytest.raises(ValueError, match=r"`preds` \(N, 3\)"):
            metric.update(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
        with pytest.raises(ValueError, match=r"`target` in \[0, 3\), but got values in \[0, 3\]"):
            metric.update(torch.zeros(2, 3), torch.tensor([0, 3]))
