"""Issue 17's loss variants against the loop reference: weighted positives, multi-hot labels, unknown labels (-1),
the class-averaged denominator; value and gradient in float64, gradcheck, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import lightning_supcon.losses.functional as functional
from lightning_supcon import SupConLoss, SupConModule, supcon_loss
from lightning_supcon.cli import cli
from tests.helpers import DIGITS
from tests.losses.reference import reference_supcon

LABELS = torch.tensor([0, 1, 0, 2, 1, 0])
PARTIAL = torch.tensor([0, -1, 0, 2, -1, -1])  # sample 3 has no other labelled positive
MULTI_HOT = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0]])


def _features(batch: int, views: int, dim: int = 5, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(batch, views, dim, generator=gen, dtype=torch.float64), dim=-1)


def _weighted_mask(seed: int = 3) -> Tensor:
    """An asymmetric (6, 6) mask of weights in {0, 0.25, 0.5, 1}; row 4 has no positive at all."""
    gen = torch.Generator().manual_seed(seed)
    levels = torch.tensor([0.0, 0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    mask = levels[torch.randint(0, 5, (6, 6), generator=gen)]
    mask[4] = 0.0
    return mask


def _compare(views: int, **kwargs: object) -> None:
    feats = _features(6, views).requires_grad_()
    ref_feats = feats.detach().clone().requires_grad_()
    out = supcon_loss(feats, **kwargs)  # type: ignore[arg-type]
    kwargs.pop("chunk_size", None)  # the reference has no blocks
    ref = reference_supcon(ref_feats, **kwargs)  # type: ignore[arg-type]
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)
    out.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(feats.grad, ref_feats.grad, rtol=1e-8, atol=1e-10)


class TestWeightedPositives:
    @pytest.mark.parametrize("views", [1, 2, 3])
    @pytest.mark.parametrize("contrast_mode", ["all", "one"])
    @pytest.mark.parametrize("summation", ["out", "in"])
    @pytest.mark.parametrize("denominator", ["all", "one_positive", "only_negatives"])
    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_against_reference(
        self, views: int, contrast_mode: str, summation: str, denominator: str, reduction: str
    ) -> None:
        kwargs = {"contrast_mode": contrast_mode, "summation": summation, "denominator": denominator}
        _compare(views, mask=_weighted_mask(), reduction=reduction, **kwargs)

    @pytest.mark.parametrize("views", [1, 2])
    @pytest.mark.parametrize("cap_per_view", [0, 1])
    def test_positives_cap(self, views: int, cap_per_view: int) -> None:
        _compare(views, mask=_weighted_mask(), positives_cap=cap_per_view * views)

    @pytest.mark.parametrize("summation", ["out", "in"])
    @pytest.mark.parametrize("dtype", [torch.bool, torch.long, torch.float32, torch.float64])
    def test_binary_mask_is_todays_loss(self, summation: str, dtype: torch.dtype) -> None:
        """A 0/1 mask of any dtype gives the class-label loss (dense: bit for bit; fused L_out: to rounding)."""
        feats = _features(6, 2)
        mask = (LABELS[:, None] == LABELS[None, :]).to(dtype)
        out = supcon_loss(feats, mask=mask, summation=summation)
        dense = supcon_loss(feats, LABELS, summation=summation, denominator="one_positive")
        assert not torch.equal(out, dense)  # a control: the denominators differ
        expected = supcon_loss(feats, LABELS, summation=summation)
        if summation == "in":
            assert torch.equal(out, expected)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-14)

    def test_weights_are_not_binarised(self) -> None:
        feats = _features(6, 2)
        mask = _weighted_mask()
        weighted = supcon_loss(feats, mask=mask)
        assert not torch.isclose(weighted, supcon_loss(feats, mask=(mask > 0).double()))
        # Scaling a row of weights changes nothing (each anchor divides by its weights' sum).
        scaled = mask.clone()
        scaled[0] *= 0.5
        torch.testing.assert_close(supcon_loss(feats, mask=scaled), weighted)

    def test_zero_weight_row_has_no_positive(self) -> None:
        feats = _features(6, 1)
        per_sample = supcon_loss(feats, mask=_weighted_mask(), reduction="none")
        assert per_sample[4] == 0.0
        mean = supcon_loss(feats, mask=_weighted_mask())
        valid = per_sample[torch.arange(6) != 4]
        torch.testing.assert_close(mean, valid[valid != 0].mean())

    @pytest.mark.parametrize(
        ("value", "match"), [(-0.5, r"\[0, 1\].*-0\.5"), (float("nan"), r"\[0, 1\].*nan"), (1.5, r"\[0, 1\].*1\.5")]
    )
    def test_bad_weights(self, value: float, match: str) -> None:
        mask = _weighted_mask()
        mask[1, 2] = value
        with pytest.raises(ValueError, match=match):
            supcon_loss(_features(6, 2), mask=mask)
        with pytest.raises(ValueError, match=match):
            SupConLoss()(_features(6, 2), mask=mask)

    def test_integer_mask_above_one(self) -> None:
        with pytest.raises(ValueError, match=r"\[0, 1\].*2"):
            supcon_loss(_features(6, 2), mask=(LABELS[:, None] == LABELS[None, :]).long() * 2)

    @pytest.mark.parametrize("summation", ["out", "in"])
    def test_gradcheck(self, summation: str) -> None:
        feats = torch.randn(6, 2, 4, dtype=torch.float64, requires_grad=True)
        mask = _weighted_mask()
        assert torch.autograd.gradcheck(lambda f: supcon_loss(f, mask=mask, summation=summation), (feats,))


class TestMultiLabel:
    @pytest.mark.parametrize("views", [1, 2])
    @pytest.mark.parametrize("contrast_mode", ["all", "one"])
    @pytest.mark.parametrize("summation", ["out", "in"])
    @pytest.mark.parametrize("multilabel", ["jaccard", "any"])
    @pytest.mark.parametrize("denominator", ["all", "one_positive"])
    def test_against_reference(
        self, views: int, contrast_mode: str, summation: str, multilabel: str, denominator: str
    ) -> None:
        kwargs = {"contrast_mode": contrast_mode, "summation": summation, "denominator": denominator}
        _compare(views, labels=MULTI_HOT, multilabel=multilabel, **kwargs)

    @pytest.mark.parametrize("dtype", [torch.bool, torch.float32, torch.uint8])
    def test_any_dtype(self, dtype: torch.dtype) -> None:
        feats = _features(6, 2)
        torch.testing.assert_close(supcon_loss(feats, MULTI_HOT.to(dtype)), supcon_loss(feats, MULTI_HOT))

    @pytest.mark.parametrize("multilabel", ["jaccard", "any"])
    def test_one_hot_is_class_labels(self, multilabel: str) -> None:
        feats = _features(6, 2)
        one_hot = F.one_hot(LABELS, 3)
        torch.testing.assert_close(supcon_loss(feats, one_hot, multilabel=multilabel), supcon_loss(feats, LABELS))

    def test_jaccard_and_any_differ(self) -> None:
        feats = _features(6, 2)
        assert not torch.isclose(supcon_loss(feats, MULTI_HOT), supcon_loss(feats, MULTI_HOT, multilabel="any"))

    def test_sample_without_labels_has_only_its_views(self) -> None:
        """Sample 3 has no label: with one view it has no positive, with two its other view is the only one."""
        assert supcon_loss(_features(6, 1), MULTI_HOT, reduction="none")[3] == 0.0
        feats = _features(6, 2)
        mask = torch.zeros(6, 6, dtype=torch.float64)
        mask[3, 3] = 1.0
        own = supcon_loss(feats, mask=mask, reduction="none")[3]
        torch.testing.assert_close(supcon_loss(feats, MULTI_HOT, reduction="none")[3], own)

    def test_module_option(self) -> None:
        feats = _features(6, 2)
        loss = SupConLoss(multilabel="any")
        torch.testing.assert_close(loss(feats, MULTI_HOT), supcon_loss(feats, MULTI_HOT, multilabel="any"))
        assert loss.init_args()["multilabel"] == "any" and "multilabel='any'" in repr(loss)
        with pytest.raises(ValueError, match=r"multilabel.*'jaccard', 'any'.*'all'"):
            SupConLoss(multilabel="all")  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("labels", "match"),
        [
            (MULTI_HOT * 2, "0/1"),
            (MULTI_HOT[:4], r"\(6, num_classes\).*\(4, 4\)"),
            (MULTI_HOT.double() * 0.5, "0/1"),
        ],
    )
    def test_bad_labels(self, labels: Tensor, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            supcon_loss(_features(6, 2), labels)

    def test_not_with_queue_or_class_mean(self) -> None:
        with pytest.raises(ValueError, match="multi-hot"):
            supcon_loss(_features(6, 2), MULTI_HOT, queue=_features(3, 1)[:, 0], queue_labels=torch.arange(3))
        with pytest.raises(ValueError, match="class_mean"):
            supcon_loss(_features(6, 2), MULTI_HOT, denominator="class_mean")

    @pytest.mark.parametrize("multilabel", ["jaccard", "any"])
    def test_gradcheck(self, multilabel: str) -> None:
        feats = torch.randn(6, 2, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda f: supcon_loss(f, MULTI_HOT, multilabel=multilabel), (feats,))


class TestPartialLabels:
    @pytest.mark.parametrize("views", [1, 2, 3])
    @pytest.mark.parametrize("contrast_mode", ["all", "one"])
    @pytest.mark.parametrize("summation", ["out", "in"])
    @pytest.mark.parametrize("denominator", ["all", "one_positive", "only_negatives", "class_mean"])
    def test_against_reference(self, views: int, contrast_mode: str, summation: str, denominator: str) -> None:
        kwargs = {"contrast_mode": contrast_mode, "summation": summation, "denominator": denominator}
        _compare(views, labels=PARTIAL, **kwargs)

    @pytest.mark.parametrize("summation", ["out", "in"])
    def test_queue_with_unknown_labels(self, summation: str) -> None:
        queue = _features(5, 1, seed=1)[:, 0]
        _compare(2, labels=PARTIAL, queue=queue, queue_labels=torch.tensor([0, -1, 2, -1, 0]), summation=summation)

    @pytest.mark.parametrize("views", [2, 3])
    @pytest.mark.parametrize("summation", ["out", "in"])
    def test_all_unknown_is_simclr(self, views: int, summation: str) -> None:
        feats = _features(6, views)
        unknown = torch.full((6,), -1)
        torch.testing.assert_close(
            supcon_loss(feats, unknown, summation=summation), supcon_loss(feats, summation=summation)
        )

    def test_stays_on_the_fused_path(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def no_dense(*args: object, **kwargs: object) -> None:
            raise AssertionError("dense path")

        monkeypatch.setattr(functional, "dense_per_anchor", no_dense)
        supcon_loss(_features(6, 2), PARTIAL)
        supcon_loss(_features(6, 2), PARTIAL, denominator="class_mean", chunk_size=4)
        with pytest.raises(AssertionError, match="dense path"):  # a control
            supcon_loss(_features(6, 2), PARTIAL, summation="in")

    def test_below_minus_one_is_an_error(self) -> None:
        with pytest.raises(ValueError, match=r"labels.*>= -1.*-2"):
            supcon_loss(_features(6, 2), torch.tensor([0, 1, -2, 0, 1, 0]))
        with pytest.raises(ValueError, match=r"queue_labels.*>= -1.*-3"):
            supcon_loss(_features(6, 2), LABELS, queue=_features(2, 1)[:, 0], queue_labels=torch.tensor([0, -3]))

    @pytest.mark.parametrize("chunk_size", [None, 3])
    def test_gradcheck(self, chunk_size: int | None) -> None:
        feats = torch.randn(6, 2, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda f: supcon_loss(f, PARTIAL, chunk_size=chunk_size), (feats,))


class TestClassMean:
    @pytest.mark.parametrize("views", [1, 2, 3])
    @pytest.mark.parametrize("contrast_mode", ["all", "one"])
    @pytest.mark.parametrize("summation", ["out", "in"])
    @pytest.mark.parametrize("supervision", ["labels", "partial", "simclr"])
    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_against_reference(
        self, views: int, contrast_mode: str, summation: str, supervision: str, reduction: str
    ) -> None:
        labels = {"labels": LABELS, "partial": PARTIAL, "simclr": None}[supervision]
        kwargs = {"contrast_mode": contrast_mode, "summation": summation, "reduction": reduction}
        _compare(views, labels=labels, denominator="class_mean", **kwargs)

    @pytest.mark.parametrize("chunk_size", [1, 4, 100])
    def test_chunked(self, chunk_size: int) -> None:
        _compare(2, labels=LABELS, denominator="class_mean", chunk_size=chunk_size)

    @pytest.mark.parametrize("supervision", ["labels", "simclr"])
    @pytest.mark.parametrize("summation", ["out", "in"])
    def test_queue(self, supervision: str, summation: str) -> None:
        queue = _features(5, 1, seed=1)[:, 0]
        labels, queue_labels = (LABELS, torch.tensor([0, 2, 3, 0, 1])) if supervision == "labels" else (None, None)
        _compare(
            2, labels=labels, queue=queue, queue_labels=queue_labels, denominator="class_mean", summation=summation
        )

    @pytest.mark.parametrize("chunk_size", [None, 4])
    @pytest.mark.parametrize(("scale", "temperature"), [(1.0, 0.01), (30.0, 0.1)])
    def test_shift_fallback(self, chunk_size: int | None, scale: float, temperature: float) -> None:
        """Rows whose bound-shifted exponentials underflow are recomputed exactly, then class-averaged."""
        feats = (_features(6, 2) * scale).requires_grad_()
        ref_feats = feats.detach().clone().requires_grad_()
        kwargs = {"temperature": temperature, "denominator": "class_mean"}
        out = supcon_loss(feats, LABELS, chunk_size=chunk_size, **kwargs)  # type: ignore[arg-type]
        ref = reference_supcon(ref_feats, LABELS, **kwargs)  # type: ignore[arg-type]
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
        out.backward()
        ref.backward()
        torch.testing.assert_close(feats.grad, ref_feats.grad, rtol=1e-7, atol=1e-9)

    def test_differs_from_the_sum(self) -> None:
        feats = _features(6, 2)
        assert not torch.isclose(supcon_loss(feats, LABELS, denominator="class_mean"), supcon_loss(feats, LABELS))

    @pytest.mark.parametrize("chunk_size", [None, 3])
    @pytest.mark.parametrize("summation", ["out", "in"])
    def test_gradcheck(self, chunk_size: int | None, summation: str) -> None:
        feats = torch.randn(6, 2, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda f: supcon_loss(f, PARTIAL, denominator="class_mean", summation=summation, chunk_size=chunk_size),
            (feats,),
        )

    def test_bad_combinations(self) -> None:
        with pytest.raises(ValueError, match=r"class_mean.*positives_cap"):
            SupConLoss(denominator="class_mean", positives_cap=2)
        with pytest.raises(ValueError, match=r"class_mean.*class labels"):
            supcon_loss(_features(6, 2), mask=_weighted_mask(), denominator="class_mean")


class TestFromTheCLI:
    def test_options_reach_the_module_loss(self) -> None:
        prefix = "--model.init_args.loss.init_args."
        app = cli(["--config", DIGITS, f"{prefix}denominator=class_mean", f"{prefix}multilabel=any"], run=False)
        assert isinstance(app.model, SupConModule)
        assert app.model.criterion.denominator == "class_mean" and app.model.criterion.multilabel == "any"
