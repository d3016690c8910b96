"""SupConLoss against the loop-based reference of the paper's equations, plus numerics and bad input."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_supcon import SupConLoss, supcon_loss
from tests.losses.reference import reference_supcon


def _features(batch: int, views: int, dim: int = 5, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(batch, views, dim, generator=gen, dtype=dtype), dim=-1)


LABELS = torch.tensor([0, 1, 0, 2, 1, 0])


def _compare(kwargs: dict, views: int, labels: Tensor | None = None, mask: Tensor | None = None) -> None:
    feats = _features(LABELS.numel(), views).requires_grad_()
    ref_feats = feats.detach().clone().requires_grad_()
    out = supcon_loss(feats, labels=labels, mask=mask, **kwargs)
    ref = reference_supcon(ref_feats, labels=labels, mask=mask, **kwargs)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)
    out.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(feats.grad, ref_feats.grad, rtol=1e-8, atol=1e-10)


class TestAgainstReference:
    @pytest.mark.parametrize("views", [1, 2, 3])
    @pytest.mark.parametrize("contrast_mode", ["all", "one"])
    @pytest.mark.parametrize("summation", ["out", "in"])
    @pytest.mark.parametrize("denominator", ["all", "one_positive", "only_negatives"])
    @pytest.mark.parametrize("supervision", ["labels", "simclr", "mask"])
    def test_variants(self, views: int, contrast_mode: str, summation: str, denominator: str, supervision: str) -> None:
        kwargs = {"contrast_mode": contrast_mode, "summation": summation, "denominator": denominator}
        labels = LABELS if supervision == "labels" else None
        mask = None
        if supervision == "mask":  # asymmetric on purpose
            gen = torch.Generator().manual_seed(3)
            mask = (torch.rand(6, 6, generator=gen) > 0.6).long()
            mask.fill_diagonal_(1)
        _compare(kwargs, views, labels=labels, mask=mask)

    @pytest.mark.parametrize("views", [1, 2])
    @pytest.mark.parametrize("cap_per_view", [0, 1, 2])
    @pytest.mark.parametrize("denominator", ["all", "one_positive"])
    def test_positives_cap(self, views: int, cap_per_view: int, denominator: str) -> None:
        kwargs = {"positives_cap": cap_per_view * views, "denominator": denominator}
        _compare(kwargs, views, labels=LABELS)

    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("base_temperature", [None, 0.07, 1.0])
    @pytest.mark.parametrize("temperature", [0.1, 0.5])
    def test_reduction_and_scaling(self, reduction: str, base_temperature: float | None, temperature: float) -> None:
        kwargs = {"reduction": reduction, "base_temperature": base_temperature, "temperature": temperature}
        _compare(kwargs, views=2, labels=LABELS)

    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_some_anchors_without_positives(self, reduction: str) -> None:
        labels = torch.tensor([0, 1, 0, 2, 3, 0])  # samples 1, 3, 4 have no positive with one view
        _compare({"reduction": reduction}, views=1, labels=labels)
        _compare({"reduction": reduction, "summation": "in"}, views=1, labels=labels)

    @pytest.mark.parametrize("chunk_size", [None, 4])
    @pytest.mark.parametrize(("scale", "temperature"), [(1.0, 0.01), (30.0, 0.1), (1.0, 1.0)])
    def test_fused_shift_fallback(self, chunk_size: int | None, scale: float, temperature: float) -> None:
        """Rows whose bound-shifted exponentials underflow are recomputed exactly (unnormalised, low tau)."""
        feats = (_features(6, 2) * scale).requires_grad_()
        ref_feats = feats.detach().clone().requires_grad_()
        out = supcon_loss(feats, LABELS, temperature=temperature, chunk_size=chunk_size)
        ref = reference_supcon(ref_feats, LABELS, temperature=temperature)
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
        out.backward()
        ref.backward()
        torch.testing.assert_close(feats.grad, ref_feats.grad, rtol=1e-7, atol=1e-9)

    def test_trailing_dims_flattened(self) -> None:
        feats = torch.randn(4, 2, 3, 2, dtype=torch.float64)
        labels = torch.tensor([0, 1, 0, 1])
        torch.testing.assert_close(supcon_loss(feats, labels), supcon_loss(feats.reshape(4, 2, 6), labels))

    def test_module_matches_functional(self) -> None:
        feats = _features(6, 2)
        loss = SupConLoss(temperature=0.2, summation="in", contrast_mode="one")
        expected = supcon_loss(feats, LABELS, temperature=0.2, summation="in", contrast_mode="one")
        torch.testing.assert_close(loss(feats, LABELS), expected)
        assert "summation='in'" in repr(loss)

    def test_chunked_equals_unchunked(self) -> None:
        feats = _features(6, 3).requires_grad_()
        full = supcon_loss(feats, LABELS)
        (grad_full,) = torch.autograd.grad(full, feats)
        for chunk in (1, 4, 7, 100):
            chunked = supcon_loss(feats, LABELS, chunk_size=chunk)
            (grad_chunked,) = torch.autograd.grad(chunked, feats)
            torch.testing.assert_close(chunked, full)
            torch.testing.assert_close(grad_chunked, grad_full)

    def test_retain_graph_second_backward(self) -> None:
        feats = _features(6, 2).requires_grad_()
        loss = supcon_loss(feats, LABELS)
        loss.backward(retain_graph=True)
        first = feats.grad.clone()
        loss.backward()
        torch.testing.assert_close(feats.grad, 2 * first)


class TestGradcheck:
    @pytest.mark.parametrize("chunk_size", [None, 3])
    @pytest.mark.parametrize("contrast_mode", ["all", "one"])
    def test_fused(self, chunk_size: int | None, contrast_mode: str) -> None:
        feats = torch.randn(5, 2, 4, dtype=torch.float64, requires_grad=True)
        labels = torch.tensor([0, 1, 0, 2, 1])
        assert torch.autograd.gradcheck(
            lambda f: supcon_loss(f, labels, contrast_mode=contrast_mode, chunk_size=chunk_size), (feats,)
        )

    @pytest.mark.parametrize("denominator", ["all", "one_positive", "only_negatives"])
    def test_dense(self, denominator: str) -> None:
        feats = torch.randn(5, 2, 4, dtype=torch.float64, requires_grad=True)
        labels = torch.tensor([0, 1, 0, 2, 1])
        assert torch.autograd.gradcheck(
            lambda f: supcon_loss(f, labels, summation="in", denominator=denominator), (feats,)
        )


class TestEdgeCases:
    @pytest.mark.parametrize("summation", ["out", "in"])
    def test_no_positives_anywhere_is_zero_and_attached(self, summation: str) -> None:
        feats = _features(5, 1).requires_grad_()
        loss = supcon_loss(feats, torch.arange(5), summation=summation)
        assert loss.item() == 0.0
        assert loss.requires_grad
        loss.backward()
        assert torch.equal(feats.grad, torch.zeros_like(feats))

    def test_single_sample_single_view(self) -> None:
        feats = _features(1, 1).requires_grad_()
        loss = supcon_loss(feats)
        loss.backward()
        assert loss.item() == 0.0
        assert torch.isfinite(feats.grad).all()

    def test_one_class(self) -> None:
        feats = _features(4, 2)
        loss = supcon_loss(feats, torch.zeros(4, dtype=torch.long))
        ref = reference_supcon(feats, torch.zeros(4, dtype=torch.long))
        torch.testing.assert_close(loss, ref)
        # one class, only negatives in the denominator: no anchor has a negative
        assert supcon_loss(feats, torch.zeros(4, dtype=torch.long), denominator="only_negatives").item() == 0.0

    @pytest.mark.parametrize("summation", ["out", "in"])
    @pytest.mark.parametrize(("norm", "temperature"), [(100.0, 0.1), (1.0, 0.01), (100.0, 0.01)])
    def test_finite_for_large_logits(self, summation: str, norm: float, temperature: float) -> None:
        feats = (_features(8, 2, dtype=torch.float32) * norm).requires_grad_()
        labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
        loss = supcon_loss(feats, labels, temperature=temperature, summation=summation)
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(feats.grad).all()

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_low_precision_computes_in_float32(self, dtype: torch.dtype) -> None:
        feats32 = _features(16, 2, dim=32, dtype=torch.float32)
        labels = torch.arange(16) % 4
        expected = supcon_loss(feats32, labels)
        low = feats32.to(dtype).requires_grad_()
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            loss = supcon_loss(low, labels)
        assert loss.dtype == torch.float32
        loss.backward()
        assert low.grad is not None and low.grad.dtype == dtype
        torch.testing.assert_close(loss, expected, rtol=2e-2, atol=2e-2)

    @pytest.mark.parametrize("summation", ["out", "in"])
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("denominator", ["all", "one_positive"])
    def test_float64_is_float64_accurate(self, summation: str, reduction: str, denominator: str) -> None:
        """Every computed constant (counts, their logs) follows the features' dtype: no float32 rounding."""
        torch.manual_seed(0)
        feats = F.normalize(torch.randn(6, 2, 5, dtype=torch.float64), dim=-1)
        labels = torch.tensor([0, 1, 2, 0, 1, 1])
        kwargs = {"temperature": 0.5, "summation": summation, "reduction": reduction, "denominator": denominator}
        out = supcon_loss(feats, labels, **kwargs)
        assert out.dtype == torch.float64
        torch.testing.assert_close(out, reference_supcon(feats, labels, **kwargs), rtol=1e-12, atol=1e-14)

    def test_labels_on_any_integer_values(self) -> None:
        """Any ids >= 0 (below 0 only -1, the unknown class: see TestPartialLabels)."""
        feats = _features(6, 2)
        torch.testing.assert_close(supcon_loss(feats, LABELS * 1000 + 7), supcon_loss(feats, LABELS))


class TestBadInput:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"temperature": 0.0}, "temperature"),
            ({"temperature": -1.0}, "temperature"),
            ({"base_temperature": 0.0}, "base_temperature"),
            ({"contrast_mode": "both"}, "contrast_mode.*'both'"),
            ({"summation": "inside"}, "summation"),
            ({"denominator": "some"}, "denominator"),
            ({"reduction": "max"}, "reduction"),
            ({"positives_cap": -2}, "positives_cap"),
            ({"chunk_size": 0}, "chunk_size"),
        ],
    )
    def test_bad_options(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            SupConLoss(**kwargs)
        with pytest.raises(ValueError, match=match):
            supcon_loss(_features(4, 2), **kwargs)

    def test_features_with_two_dims(self) -> None:
        with pytest.raises(ValueError, match=r"at least 3 dims.*\(4, 8\)"):
            supcon_loss(torch.randn(4, 8))

    def test_labels_wrong_length(self) -> None:
        with pytest.raises(ValueError, match=r"labels.*\(4,\).*\(3,\)"):
            supcon_loss(_features(4, 2), torch.tensor([0, 1, 0]))

    def test_float_labels(self) -> None:
        with pytest.raises(ValueError, match="integer"):
            supcon_loss(_features(4, 2), torch.tensor([0.0, 1.0, 0.0, 1.0]))

    def test_mask_wrong_shape(self) -> None:
        with pytest.raises(ValueError, match=r"mask.*\(4, 4\).*\(4, 3\)"):
            supcon_loss(_features(4, 2), mask=torch.ones(4, 3))

    def test_labels_and_mask(self) -> None:
        with pytest.raises(ValueError, match="not both"):
            supcon_loss(_features(4, 2), torch.tensor([0, 1, 0, 1]), mask=torch.eye(4))

    def test_cap_not_multiple_of_views(self) -> None:
        with pytest.raises(ValueError, match="multiple of the number of views"):
            supcon_loss(_features(4, 2), torch.tensor([0, 1, 0, 1]), positives_cap=3)


class TestQueue:
    @pytest.mark.parametrize("supervision", ["labels", "simclr"])
    @pytest.mark.parametrize("summation", ["out", "in"])
    @pytest.mark.parametrize("contrast_mode", ["all", "one"])
    def test_against_reference(self, supervision: str, summation: str, contrast_mode: str) -> None:
        """Each anchor's contrast set is the batch plus the queue."""
        feats = _features(6, 2).requires_grad_()
        ref_feats = feats.detach().clone().requires_grad_()
        queue = _features(5, 1, seed=1)[:, 0].requires_grad_()
        queue_labels = torch.tensor([0, 2, 3, 0, 1]) if supervision == "labels" else None
        labels = LABELS if supervision == "labels" else None
        kwargs = {"summation": summation, "contrast_mode": contrast_mode}
        out = supcon_loss(feats, labels, queue=queue, queue_labels=queue_labels, **kwargs)
        ref = reference_supcon(ref_feats, labels, queue=queue.detach(), queue_labels=queue_labels, **kwargs)
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)
        out.backward()
        ref.backward()
        torch.testing.assert_close(feats.grad, ref_feats.grad, rtol=1e-8, atol=1e-10)
        assert queue.grad is None  # the queue carries no gradient

    def test_queue_changes_the_loss(self) -> None:
        feats = _features(6, 2)
        queue = _features(4, 1, seed=2)[:, 0]
        with_queue = supcon_loss(feats, LABELS, queue=queue, queue_labels=torch.tensor([0, 1, 2, 3]))
        assert not torch.isclose(with_queue, supcon_loss(feats, LABELS))

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"mask": torch.eye(6)}, "not with `mask`"),
            ({"labels": LABELS}, "queue_labels"),
            ({"labels": LABELS, "queue_labels": torch.zeros(3, dtype=torch.long)}, r"\(4,\)"),
        ],
    )
    def test_bad_queue(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            supcon_loss(_features(6, 2), queue=_features(4, 1)[:, 0], **kwargs)

    def test_queue_feature_size(self) -> None:
        with pytest.raises(ValueError, match="queue"):
            supcon_loss(_features(6, 2), queue=torch.randn(4, 3, dtype=torch.float64))


class TestValidatedOnce:
    """The options are checked once per SupConLoss (at construction) and at each call of the functional form."""

    def test_module_forward_does_not_recheck_its_options(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from lightning_supcon.losses.options import SupConOptions

        calls: list[SupConOptions] = []
        check = SupConOptions.__post_init__
        monkeypatch.setattr(SupConOptions, "__post_init__", lambda self: calls.append(self) or check(self))
        loss = SupConLoss(temperature=0.2)
        assert len(calls) == 1
        for _ in range(3):
            loss(_features(6, 2), LABELS)
        assert len(calls) == 1
        supcon_loss(_features(6, 2), LABELS)
        assert len(calls) == 2

    def test_gather_override_and_plain_options(self) -> None:
        loss = SupConLoss(temperature=0.2, chunk_size=4)
        feats = _features(6, 2)
        torch.testing.assert_close(loss(feats, LABELS, gather_distributed=False), loss(feats, LABELS))
        assert loss.init_args()["temperature"] == 0.2 and loss.init_args()["chunk_size"] == 4
        assert SupConLoss(**loss.init_args()).init_args() == loss.init_args()


class TestOptionsRecord:
    """SupConLoss keeps its options in one :class:`SupConOptions` record; everything it shows derives from it."""

    @pytest.mark.parametrize(
        "kwargs",
        [
            {},
            {"temperature": 0.5, "base_temperature": 0.07, "contrast_mode": "one", "chunk_size": 3},
            {"summation": "in", "denominator": "one_positive", "positives_cap": 2, "reduction": "sum"},
            {"denominator": "only_negatives", "reduction": "none"},
            {"denominator": "class_mean", "base_temperature": 1.0, "chunk_size": 1},
            {"summation": "in", "contrast_mode": "one", "denominator": "class_mean", "reduction": "none"},
        ],
    )
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_module_and_functional_are_identical(self, kwargs: dict, dtype: torch.dtype) -> None:
        """The same record, built by either public form: bit-identical values and gradients."""
        feats = _features(6, 2, dtype=dtype).requires_grad_()
        twin = feats.detach().clone().requires_grad_()
        out = SupConLoss(**kwargs, gather_distributed=False)(feats, LABELS)
        expected = supcon_loss(twin, LABELS, **kwargs)
        out.sum().backward()
        expected.sum().backward()
        assert torch.equal(out, expected) and torch.equal(feats.grad, twin.grad)  # type: ignore[arg-type]

    def test_rebuilt_from_init_args_equals_it(self, tmp_path: Path) -> None:
        loss = SupConLoss(temperature=0.3, base_temperature=0.07, denominator="class_mean", chunk_size=4)
        assert SupConLoss(**loss.init_args()).options == loss.options
        path = tmp_path / "hparams.pt"
        torch.save(loss.init_args(), path)  # plain data, as a checkpoint's hyperparameters hold it
        rebuilt = SupConLoss(**torch.load(path, weights_only=True))
        assert rebuilt.options == loss.options and repr(rebuilt) == repr(loss)

    def test_repr_and_attributes_show_every_option(self) -> None:
        loss = SupConLoss(temperature=0.3, chunk_size=4, multilabel="any")
        for name, value in loss.init_args().items():
            assert getattr(loss, name) == value
            assert f"{name}={value!r}" in repr(loss)  # chunk_size included

    def test_setting_an_option_validates_it_and_reaches_forward(self) -> None:
        feats = _features(6, 2)
        loss = SupConLoss()
        loss.temperature = 0.5
        assert loss.options.temperature == 0.5 and "temperature" not in loss.__dict__
        torch.testing.assert_close(loss(feats, LABELS), SupConLoss(temperature=0.5)(feats, LABELS), rtol=0, atol=0)
        with pytest.raises(ValueError, match=r"Expected argument `summation` to be one of \('out', 'in'\)"):
            loss.summation = "within"
        assert loss.summation == "out"

    def test_gather_override_does_not_change_the_module(self) -> None:
        loss = SupConLoss(chunk_size=2)
        loss(_features(6, 2), LABELS, gather_distributed=False)
        assert loss.gather_distributed is True and loss.options == SupConLoss(chunk_size=2).options

    def test_pickled_and_copied(self, tmp_path: Path) -> None:
        feats = _features(6, 2)
        loss = SupConLoss(temperature=0.2, summation="in")
        path = tmp_path / "loss.pt"
        torch.save(loss, path)
        for other in (torch.load(path, weights_only=False), copy.deepcopy(loss)):
            assert other.options == loss.options and other.temperature == 0.2
            assert torch.equal(other(feats, LABELS), loss(feats, LABELS))
