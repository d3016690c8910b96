"""The figure of ``evidence.py`` (matplotlib, Agg): per claim the mean paired difference with its 95% interval, zero
marked; and the ROC curves of the OOD comparison, SupCon vs cross-entropy encoders (kNN-distance score; CE's maximum
softmax probability dashed), of the first seed, near and far OOD."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from evidence_claims import Claim, evaluate
from evidence_runs import Spec, spec
from sklearn.metrics import roc_curve

OOD_ARMS = {
    "SupCon (kNN)": (spec("digits04", "supcon"), "knn"),
    "CE (kNN)": (spec("digits04", "ce"), "knn"),
    "CE (MSP)": (spec("digits04", "ce"), "msp"),
}
COLOURS = {True: "tab:green", False: "tab:red"}
STYLE = {"SupCon (kNN)": ("tab:blue", "-"), "CE (kNN)": ("tab:orange", "-"), "CE (MSP)": ("tab:orange", ":")}


def draw(claims: list[Claim], results: Mapping[tuple[Spec, int], Mapping[str, Any]], path: Path) -> None:
    """Write the figure to ``path`` (PNG)."""
    rows = [(claim, evaluate(claim, results)[1]) for claim in claims]
    fig = plt.figure(figsize=(13, max(4.0, 0.34 * len(rows) + 1.5)), layout="constrained")
    grid = fig.add_gridspec(2, 2, width_ratios=[1.6, 1])
    ax = fig.add_subplot(grid[:, 0])
    for y, (claim, diff) in enumerate(reversed(rows)):
        if diff is None:
            ax.text(0, y, "not run", va="center", ha="center", fontsize=8, color="grey")
            continue
        low, high = (diff.low, diff.high) if not math.isinf(diff.low) else (diff.mean, diff.mean)
        colour = (
            "tab:grey" if diff.sign == 0 else "tab:blue" if claim.expect == 0 else COLOURS[diff.sign == claim.expect]
        )
        ax.errorbar(diff.mean, y, xerr=[[diff.mean - low], [high - diff.mean]], fmt="o", color=colour, capsize=3)
        ax.annotate(
            f"{diff.mean:+.1f}",
            (diff.mean, y),
            textcoords="offset points",
            xytext=(0, 5),
            ha="center",
            fontsize=7,
            color=colour,
        )
    ax.axvline(0, color="black", linewidth=1)
    for y, (claim, _) in enumerate(reversed(rows)):  # a rule between the data sets (claims are grouped by data)
        if y + 1 < len(rows) and list(reversed(rows))[y + 1][0].a[0].data != claim.a[0].data:
            ax.axhline(y + 0.5, color="grey", linewidth=0.5, linestyle="--")
    ax.set_yticks(range(len(rows)), [f"{c.label}  [{d.n if d else 0}]" for c, d in reversed(rows)], fontsize=8)
    ax.set_xlabel("A - B, percentage points (mCE: % of CE - 100); 95% paired-t interval; [n] = seeds")
    ax.set_title(
        "green: settled as the paper expects; red: settled opposite; grey: not settled; blue: no expectation",
        fontsize=10,
    )
    ax.grid(axis="x", alpha=0.3)
    for row, which in enumerate(("near", "far")):
        roc = fig.add_subplot(grid[row, 1])
        for name, (sp, scorer) in OOD_ARMS.items():
            seeds = sorted(s for (k, s) in results if k == sp)
            if not seeds:
                continue
            scores = results[sp, seeds[0]]["ood"][f"{scorer}_{which}"]
            labels = [1] * len(scores["in_scores"]) + [0] * len(scores["out_scores"])
            fpr, tpr, _ = roc_curve(labels, scores["in_scores"] + scores["out_scores"])
            colour, line = STYLE[name]
            roc.plot(fpr, tpr, color=colour, linestyle=line, label=f"{name}: AUROC {100 * scores['auroc']:.1f}")
        roc.plot([0, 1], [0, 1], color="grey", linewidth=0.5)
        target = "digits 5-9" if which == "near" else "noise, shapes, inverted 0-4"
        roc.set_title(f"{which} OOD: {target} (seed 0)", fontsize=9)
        roc.set_xlabel("false positive rate (OOD accepted)")
        roc.set_ylabel("true positive rate")
        roc.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=90)
    plt.close(fig)
