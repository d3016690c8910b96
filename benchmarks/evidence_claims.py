"""The claims of ``evidence.py``: for each, the two arms (lists of run specs), what is measured, and what the paper
says; and :func:`evaluate`, the per-seed values and the paired difference of a claim from the finished runs.

Every difference is arm A minus arm B, in percentage points, over the seeds both arms have finished; the paper's
expected sign is written next to it, and the table says whether the interval settles it either way.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from evidence_runs import Spec, spec
from evidence_stats import PairedDifference, paired_difference, relative_corruption_error

Kind = Literal["single", "std", "mce"]


@dataclass(frozen=True)
class Claim:
    """Arm A against arm B.

    ``kind``: ``"single"``: ``metric_a`` of ``a[0]`` minus ``metric_b`` of ``b[0]``; ``"std"``: the standard deviation
    of ``metric_a`` over the recipes ``a`` minus that over ``b`` (stability, Fig. 4a of [0]); ``"mce"``: the corruption
    error of ``a[0]`` relative to ``b[0]`` (mCE, 100 = as robust as B) minus 100.
    """

    name: str
    label: str
    paper: str
    a: tuple[Spec, ...]
    b: tuple[Spec, ...]
    metric_a: str = "top1"
    metric_b: str = "top1"
    kind: Kind = "single"

    @property
    def expect(self) -> int:
        """The sign of A - B that the paper (or the issue) expects, read from ``paper``; 0: no expectation."""
        return 1 if self.paper.startswith(">") else -1 if self.paper.startswith("<") else 0

    def verdict(self, sign: int) -> str:
        """What a settled (``sign`` != 0) or unsettled difference says about the expectation."""
        if sign == 0:
            return "not settled"
        found = "A > B" if sign > 0 else "A < B"
        if self.expect == 0:
            return found
        return f"{found}: {'as expected' if sign == self.expect else 'OPPOSITE'}"

    @property
    def specs(self) -> tuple[Spec, ...]:
        return self.a + self.b

    @property
    def needs_corruptions(self) -> bool:
        return "corruption" in self.metric_a or self.kind == "mce"


def _pair(name: str, label: str, paper: str, a: Spec, b: Spec, metric: str = "top1") -> Claim:
    return Claim(name, label, paper, (a,), (b,), metric, metric)


S, C = spec("digits", "supcon"), spec("digits", "ce")
HS, HC = spec("hard", "supcon"), spec("hard", "ce")
RECIPES: tuple[dict[str, Any], ...] = ({}, {"augment": "strong"}, {"lr": 0.02})

CLAIMS: tuple[Claim, ...] = (
    _pair("labels_100", "SupCon vs CE, 100% labels", "> 0 (Table 2)", S, C),
    _pair(
        "labels_10",
        "SupCon vs CE, 10% labels",
        "> 0 (issue)",
        spec("digits", "supcon", labels=0.1),
        spec("digits", "ce", labels=0.1),
    ),
    _pair(
        "labels_1",
        "SupCon vs CE, 1% labels",
        "> 0 (issue)",
        spec("digits", "supcon", labels=0.01),
        spec("digits", "ce", labels=0.01),
    ),
    _pair("l_out_in", "L_out vs L_in", "> 0 (Table 1)", S, spec("digits", "supcon", loss="in")),
    _pair(
        "temp_005", "temperature 0.05 vs 0.1", "<= 0 (Fig. 4b: 0.1 best)", spec("digits", "supcon", temperature=0.05), S
    ),
    _pair("temp_05", "temperature 0.5 vs 0.1", "< 0 (Fig. 4b)", spec("digits", "supcon", temperature=0.5), S),
    _pair("batch_32", "batch 32 vs 128 (SupCon)", "< 0 (Fig. 4c)", spec("digits", "supcon", batch=32), S),
    _pair("corruption", "mean corruption error, SupCon - CE", "< 0 (ImageNet-C)", S, C, "corruption_error"),
    Claim("mce", "relative mCE - 100 (CE = 100)", "< 0 (ImageNet-C)", (S,), (C,), kind="mce"),
    Claim(
        "stability",
        "std over 3 recipes, SupCon - CE",
        "< 0 (Fig. 4a)",
        tuple(spec("digits", "supcon", **r) for r in RECIPES),
        tuple(spec("digits", "ce", **r) for r in RECIPES),
        kind="std",
    ),
    Claim("online_probe", "online probe vs linear stage (SupCon)", "none", (S,), (S,), "online_probe_top1", "top1"),
    _pair(
        "ood_near",
        "OOD near (digits 5-9) AUROC, kNN",
        "> 0 (issue)",
        spec("digits04", "supcon"),
        spec("digits04", "ce"),
        "auroc:knn_near",
    ),
    _pair(
        "ood_far",
        "OOD far (noise/shapes/inverted) AUROC, kNN",
        "> 0 (issue)",
        spec("digits04", "supcon"),
        spec("digits04", "ce"),
        "auroc:knn_far",
    ),
    Claim(
        "ood_near_msp",
        "OOD near AUROC, SupCon kNN vs CE MSP",
        "> 0 (issue)",
        (spec("digits04", "supcon"),),
        (spec("digits04", "ce"),),
        "auroc:knn_near",
        "auroc:msp_near",
    ),
    Claim(
        "ood_far_msp",
        "OOD far AUROC, SupCon kNN vs CE MSP",
        "> 0 (issue)",
        (spec("digits04", "supcon"),),
        (spec("digits04", "ce"),),
        "auroc:knn_far",
        "auroc:msp_far",
    ),
    _pair("hard", "hard digits: SupCon vs CE", "> 0 (Table 2)", HS, HC),
    Claim("hard_online", "hard: online probe vs linear stage", "none", (HS,), (HS,), "online_probe_top1", "top1"),
    _pair(
        "hard_long",
        "hard: SupCon vs CE, 3x epochs",
        "> 0",
        spec("hard", "supcon", epochs_x=3),
        spec("hard", "ce", epochs_x=3),
    ),
    _pair("hard_batch_32", "hard: SupCon batch 32 vs CE", "", spec("hard", "supcon", batch=32), HC),
    _pair(
        "hard_queue", "hard: SupCon batch 32 + queue 1024 vs CE", "", spec("hard", "supcon", batch=32, queue=1024), HC
    ),
    _pair("hard_linear_head", "hard: SupCon linear head vs CE", "", spec("hard", "supcon", head="linear"), HC),
    _pair(
        "hard_strong_aug",
        "hard: strong augmentation, SupCon vs CE",
        "",
        spec("hard", "supcon", augment="strong"),
        spec("hard", "ce", augment="strong"),
    ),
    _pair("hard_joint", "hard: SupCon + 1 x CE jointly vs CE", "", spec("hard", "supcon", ce_weight=1.0), HC),
    _pair("hard_lr", "hard: SupCon lr 0.05 vs CE (lr 0.1)", "", spec("hard", "supcon", lr=0.05), HC),
    Claim("hard_mce", "hard: relative mCE - 100", "< 0 (ImageNet-C)", (HS,), (HC,), kind="mce"),
)
QUICK = ("labels_100", "corruption", "mce", "ood_near", "ood_far")


def metric(result: Mapping[str, Any], name: str) -> float:
    """One measurement of a run, in percent: ``top1``, ``online_probe_top1``, ``corruption_error`` (mean over
    corruptions and severities) or ``auroc:<scorer>_<near|far>``."""
    if name == "corruption_error":
        errors = [e for per_severity in result["corruption_errors"].values() for e in per_severity]
        return 100.0 * statistics.fmean(errors)
    if name.startswith("auroc:"):
        return 100.0 * float(result["ood"][name.split(":", 1)[1]]["auroc"])
    return 100.0 * float(result[name])


def seed_values(claim: Claim, results: Mapping[tuple[Spec, int], Mapping[str, Any]]) -> dict[int, tuple[float, float]]:
    """Per seed that every spec of the claim has finished: the values of arm A and arm B."""
    seeds = {seed for _, seed in results}
    done = sorted(s for s in seeds if all((sp, s) in results for sp in claim.specs))
    values: dict[int, tuple[float, float]] = {}
    for s in done:
        if claim.kind == "std":
            a = statistics.pstdev([metric(results[sp, s], claim.metric_a) for sp in claim.a])
            b = statistics.pstdev([metric(results[sp, s], claim.metric_b) for sp in claim.b])
        elif claim.kind == "mce":
            a = 100.0 * relative_corruption_error(
                results[claim.a[0], s]["corruption_errors"], results[claim.b[0], s]["corruption_errors"]
            )
            b = 100.0
        else:
            a, b = metric(results[claim.a[0], s], claim.metric_a), metric(results[claim.b[0], s], claim.metric_b)
        values[s] = (a, b)
    return values


def evaluate(
    claim: Claim, results: Mapping[tuple[Spec, int], Mapping[str, Any]]
) -> tuple[dict[int, tuple[float, float]], PairedDifference | None]:
    """The claim's per-seed values and their paired difference (``None`` when no seed has both arms)."""
    values = seed_values(claim, results)
    if not values:
        return values, None
    a, b = zip(*values.values(), strict=True)
    return values, paired_difference(list(a), list(b))
