"""benchmarks/evidence.py and its helpers: the paired interval against scipy's ``ttest_rel``, the mCE against a loop,
the corrupted copies (seeded, stronger with severity), the harder data sets, the pairing of the two arms (same
initial encoder, same batches), the plan of runs, and the ``--quick`` table end to end (resumed without retraining).
"""

from __future__ import annotations

import doctest
import importlib
import itertools
import json
import statistics
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from scipy import stats

from tests.benchmarks.test_benchmarks import BENCHMARKS, run_script

MODULES = ("evidence_stats", "evidence_data", "evidence_runs", "evidence_claims", "evidence_figure", "evidence")


@pytest.fixture(scope="module")
def ev() -> Iterator[dict[str, ModuleType]]:
    """The benchmark modules, imported as the scripts import each other (``benchmarks/`` first on the path)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        yield {name: importlib.import_module(name) for name in MODULES}


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from lightning_supcon.data.digits import load_digit_images

    images, labels = load_digit_images(16)
    return images[:64], labels[:64]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(ev: dict[str, ModuleType], name: str) -> None:
    result = doctest.testmod(ev[name], optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


class TestPairedDifference:
    @pytest.mark.parametrize("n", [2, 5, 9])
    def test_interval_is_scipys_paired_t(self, ev: dict[str, ModuleType], n: int) -> None:
        gen = torch.Generator().manual_seed(n)
        a, b = torch.randn(n, generator=gen).tolist(), torch.randn(n, generator=gen).tolist()
        diff = ev["evidence_stats"].paired_difference(a, b)
        reference = stats.ttest_rel(a, b).confidence_interval(0.95)
        assert diff.mean == pytest.approx(statistics.fmean(x - y for x, y in zip(a, b, strict=True)))
        assert (diff.low, diff.high) == pytest.approx((reference.low, reference.high), rel=1e-9)
        assert diff.n == n

    def test_sign(self, ev: dict[str, ModuleType]) -> None:
        paired = ev["evidence_stats"].paired_difference
        assert paired([2.0, 3.0, 2.5], [0.0, 0.1, 0.2]).sign == 1
        assert paired([0.0, 0.1, 0.2], [2.0, 3.0, 2.5]).sign == -1
        assert paired([1.0, -1.0, 0.5], [0.0, 0.0, 0.0]).sign == 0
        assert paired([5.0], [0.0]).sign == 0  # one seed settles nothing

    def test_unpaired_lists_are_refused(self, ev: dict[str, ModuleType]) -> None:
        with pytest.raises(ValueError, match=r"equally long, non-empty .* got 2 and 3"):
            ev["evidence_stats"].paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])


class TestRelativeCorruptionError:
    def test_matches_a_loop_from_imagenet_c(self, ev: dict[str, ModuleType]) -> None:
        gen = torch.Generator().manual_seed(0)
        names = ["noise", "blur", "contrast"]
        model = {n: torch.rand(5, generator=gen).tolist() for n in names}
        base = {n: torch.rand(5, generator=gen).tolist() for n in names}
        ratios = []
        for n in names:  # CE_c = sum_s E_s,c / sum_s E_s,c^base; mCE = mean_c CE_c
            top, bottom = 0.0, 0.0
            for s in range(5):
                top += model[n][s]
                bottom += base[n][s]
            ratios.append(top / bottom)
        expected = sum(ratios) / len(ratios)
        assert ev["evidence_stats"].relative_corruption_error(model, base) == pytest.approx(expected)

    def test_errors(self, ev: dict[str, ModuleType]) -> None:
        rce = ev["evidence_stats"].relative_corruption_error
        with pytest.raises(ValueError, match="same corruptions"):
            rce({"blur": [0.1]}, {"noise": [0.1]})
        with pytest.raises(ValueError, match="no error on 'blur'"):
            rce({"blur": [0.1]}, {"blur": [0.0]})


class TestCorrupt:
    @pytest.mark.parametrize("name", ["gaussian_noise", "blur", "contrast", "rotation", "elastic"])
    def test_seeded_and_stronger_with_severity(
        self, ev: dict[str, ModuleType], digits: tuple[torch.Tensor, torch.Tensor], name: str
    ) -> None:
        corrupt = ev["evidence_data"].corrupt
        images = digits[0]
        first = corrupt(images, name, 3, seed=7)
        assert first.dtype == torch.uint8 and first.shape == images.shape
        assert torch.equal(first, corrupt(images, name, 3, seed=7))
        distance = [(corrupt(images, name, s).float() - images.float()).abs().mean().item() for s in range(1, 6)]
        assert distance[0] > 0
        assert all(b > a for a, b in itertools.pairwise(distance)), distance

    @pytest.mark.parametrize("name", ["gaussian_noise", "rotation", "elastic"])
    def test_seed_changes_the_random_parts(
        self, ev: dict[str, ModuleType], digits: tuple[torch.Tensor, torch.Tensor], name: str
    ) -> None:
        corrupt = ev["evidence_data"].corrupt
        assert not torch.equal(corrupt(digits[0], name, 3, seed=0), corrupt(digits[0], name, 3, seed=1))

    def test_bad_arguments(self, ev: dict[str, ModuleType], digits: tuple[torch.Tensor, torch.Tensor]) -> None:
        corrupt = ev["evidence_data"].corrupt
        with pytest.raises(ValueError, match=r"one of .*'gaussian_noise'.* but got 'fog'"):
            corrupt(digits[0], "fog", 1)
        with pytest.raises(ValueError, match=r"severity` in \(1, 2, 3, 4, 5\), but got 0"):
            corrupt(digits[0], "blur", 0)
        with pytest.raises(ValueError, match="uint8 images"):
            corrupt(digits[0].float(), "blur", 1)


class TestData:
    def test_hard_digits_blend_every_image_with_another_class(self, ev: dict[str, ModuleType]) -> None:
        from lightning_supcon import DigitsDataModule

        clean, hard = DigitsDataModule(), ev["evidence_data"].HardDigits()
        tensors = ev["evidence_data"].tensors
        for split in ("train", "val"):
            (x, y), (hx, hy) = tensors(clean.dataset(split)), tensors(hard.dataset(split))
            assert torch.equal(y, hy)
            assert (hx.float() - x.float()).abs().flatten(1).mean(1).min() > 5  # every image changed
        again = ev["evidence_data"].HardDigits()
        assert torch.equal(tensors(again.dataset("train"))[0], tensors(hard.dataset("train"))[0])  # fixed task
        assert hard.mean != clean.mean

    def test_subset_keeps_its_classes_and_the_rest_for_near_ood(self, ev: dict[str, ModuleType]) -> None:
        dm = ev["evidence_data"].DigitsSubset(classes=(0, 1, 2, 3, 4))
        assert dm.num_classes == 5
        assert set(dm.dataset("train").labels.tolist()) == {0, 1, 2, 3, 4}
        assert len(dm.held_out_val) == 360 and len(dm.dataset("val")) < 200

    def test_far_ood(self, ev: dict[str, ModuleType], digits: tuple[torch.Tensor, torch.Tensor]) -> None:
        far = ev["evidence_data"].far_ood_images(digits[0], 10, seed=3)
        assert torch.equal(far["inverted"], 255 - digits[0])
        assert all(x.dtype == torch.uint8 and x.shape[1:] == (1, 16, 16) for x in far.values())
        assert (far["shapes"] > 0).any() and torch.equal(
            far["noise"], ev["evidence_data"].far_ood_images(digits[0], 10, seed=3)["noise"]
        )


class TestPairing:
    @pytest.mark.parametrize("data", ["digits", "hard"])
    def test_both_arms_start_from_the_same_encoder_and_batches(self, ev: dict[str, ModuleType], data: str) -> None:
        runs = ev["evidence_runs"]
        arms: list[tuple[Any, Any]] = []
        for arm in ("supcon", "ce"):
            pl.seed_everything(3, verbose=False)
            dm = runs.make_data(data, 16, 2, 1.0, "digits", 3)
            model = runs.build(runs.spec(data, arm), dm.num_classes)
            arms.append((model.encoder.state_dict(), next(iter(dm.train_dataloader()))))
        (enc_a, batch_a), (enc_b, batch_b) = arms
        assert all(torch.equal(enc_a[k], enc_b[k]) for k in enc_a)
        assert torch.equal(batch_a[0], batch_b[0]) and torch.equal(batch_a[1], batch_b[1])
        pl.seed_everything(4, verbose=False)
        other = runs.build(runs.spec(data, "ce"), 10).encoder.state_dict()
        assert not all(torch.equal(enc_a[k], other[k]) for k in enc_a)  # the seed matters

    @pytest.mark.parametrize(("labels", "count", "batch"), [(1.0, 1437, 128), (0.1, 145, 128), (0.01, 10, 10)])
    def test_label_fractions_get_the_same_optimiser_steps(
        self, ev: dict[str, ModuleType], labels: float, count: int, batch: int
    ) -> None:
        from lightning_supcon.data.subsets import label_subset

        runs = ev["evidence_runs"]
        train = runs.make_data("digits", 8, 1, 1.0, "digits", 0).dataset("train")
        assert len(label_subset(train, labels, 0)) == count  # stratified: at least one image per class
        got_batch, epochs = runs.budget("digits", runs.spec("digits", "ce", labels=labels).settings(), 0, 8)
        assert got_batch == batch
        steps = count // batch
        assert epochs * steps >= 8 * runs.FULL_STEPS > (epochs - 1) * steps

    def test_unknown_setting(self, ev: dict[str, ModuleType]) -> None:
        with pytest.raises(ValueError, match=r"Unknown settings \['tau'\]"):
            ev["evidence_runs"].spec("digits", "supcon", tau=0.1).settings()


class TestClaims:
    def test_plan_runs_each_spec_once_first_seeds_first(self, ev: dict[str, ModuleType]) -> None:
        plan = list(ev["evidence"].plan(list(ev["evidence_claims"].CLAIMS), 5))
        keys = [(sp, seed) for sp, seed, _ in plan]
        assert len(keys) == len(set(keys))
        first_late = next(i for i, (_, seed) in enumerate(keys) if seed >= 3)
        assert all(seed < 3 for _, seed in keys[:first_late])
        corrupted = {sp.label() for sp, _, c in plan if c}
        assert corrupted == {"digits/supcon", "digits/ce", "hard/supcon", "hard/ce"}

    def test_values_of_each_kind(self, ev: dict[str, ModuleType]) -> None:
        claims, runs = ev["evidence_claims"], ev["evidence_runs"]
        by_name = {c.name: c for c in claims.CLAIMS}
        errors = {"blur": [0.1, 0.3], "noise": [0.2, 0.2]}
        results: dict[Any, Any] = {}
        for seed in range(2):
            for r, (s_top, c_top) in zip(claims.RECIPES, [(0.9, 0.8), (0.9, 0.6), (0.9, 0.7)], strict=True):
                results[runs.spec("digits", "supcon", **r), seed] = {
                    "top1": s_top,
                    "online_probe_top1": 0.85,
                    "corruption_errors": errors,
                }
                results[runs.spec("digits", "ce", **r), seed] = {
                    "top1": c_top + 0.01 * seed,
                    "corruption_errors": {"blur": [0.2, 0.6], "noise": [0.2, 0.2]},
                }
        values, diff = claims.evaluate(by_name["labels_100"], results)
        assert values[1] == pytest.approx((90.0, 81.0)) and diff.n == 2
        values, _ = claims.evaluate(by_name["stability"], results)
        assert values[0] == pytest.approx((0.0, 100 * statistics.pstdev([0.8, 0.6, 0.7])))
        values, _ = claims.evaluate(by_name["mce"], results)
        assert values[0] == pytest.approx((75.0, 100.0))  # (0.5 + 1.0) / 2
        values, _ = claims.evaluate(by_name["online_probe"], results)
        assert values[0] == pytest.approx((85.0, 90.0))
        assert claims.evaluate(by_name["labels_10"], results) == ({}, None)
        assert by_name["corruption"].verdict(-1) == "A < B: as expected"
        assert by_name["labels_100"].verdict(-1) == "A < B: OPPOSITE"
        assert by_name["online_probe"].verdict(1) == "A > B"


@pytest.mark.slow  # ~40 s on a busy 2-core machine: 8 short trainings
def test_quick_table_figure_and_resume(tmp_path: Path) -> None:
    proc = run_script("evidence.py", "--quick", "--out", str(tmp_path / "out"), tmp_path=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split("|")[1].strip() for row in rows] == [
        "SupCon vs CE, 100% labels",
        "mean corruption error, SupCon - CE",
        "relative mCE - 100 (CE = 100)",
        "OOD near (digits 5-9) AUROC, kNN",
        "OOD far (noise/shapes/inverted) AUROC, kNN",
    ]
    assert all(row.split("|")[4].strip() == "2/2" for row in rows), proc.stdout
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 8 and {r["seed"] for r in records} == {0, 1}
    png = (tmp_path / "out" / "evidence.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    again = run_script("evidence.py", "--quick", "--out", str(tmp_path / "out"), tmp_path=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 8  # nothing retrained
    assert [line for line in again.stdout.splitlines() if line.startswith("| ")] == [
        line for line in proc.stdout.splitlines() if line.startswith("| ")
    ]
