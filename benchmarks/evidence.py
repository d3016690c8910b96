"""The paper's claims as a reproducible evidence table: paired seeds, mean differences with 95% intervals, a figure.

    python benchmarks/evidence.py --quick                     # 2 seeds, 1 epoch, 5 claims: a smoke run, ~1 min
    python benchmarks/evidence.py --seeds 5 --epochs 8         # every claim (27 runs per seed), resumable
    python benchmarks/evidence.py --seeds 5 --shard 0/2 &      # the same runs split over two processes ...
    python benchmarks/evidence.py --seeds 5 --shard 1/2        # ... writing results-0of2.jsonl / results-1of2.jsonl
    python benchmarks/evidence.py --seeds 5 --report-only      # the table and figure from what has finished

Each claim of Khosla et al. [0] (see ``evidence_claims.py``) is measured as arm A minus arm B on the same seeds: a
seed gives both arms the same encoder initialisation, data order and augmentation draws (``evidence_runs.py``). The
protocol is the paper's: SupCon pretraining on 2 views per image, then a linear classifier on the frozen encoder
(the "linear stage"); cross-entropy end to end on the same 2 views; the online probe of stage 1 is reported beside
the linear stage, never instead of it. The interval is a paired t interval (``scipy.stats.t``) over the seeds.

Data (all made here, no download; ``evidence_data.py``): the embedded digits (1,437 train / 360 val, 16 px); "hard
digits" (every image blended once with a digit of another class and noised: class-overlapping); digits 0-4 as the
in-distribution set of the OOD comparison (near OOD: digits 5-9; far: noise, shapes, inverted digits); a corrupted
copy of the val split (Gaussian noise, blur, contrast, rotation, elastic; 5 severities; seeded).

Results go to ``--out`` (default ``outputs/evidence/``, ignored by git): ``results*.jsonl`` (one line per finished
run, keyed by spec, seed and epochs; a run already there is skipped, so an interrupted table resumes), ``evidence.md``
(the table) and ``evidence.png`` (per claim the mean difference and its interval, zero marked; the OOD ROC curves
of SupCon vs CE). On 2 shared CPU cores the default table (5 seeds, 135 runs) took 42 min as two shards.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020, https://arxiv.org/abs/2004.11362
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from common import machine
from evidence_claims import CLAIMS, QUICK, Claim, evaluate
from evidence_figure import draw
from evidence_runs import Spec, run_once
from evidence_stats import CI_METHOD
from tqdm import tqdm

FIRST_BLOCK = 3  # seeds 0-2 of every claim run before seeds 3+: a cut-short table still has an interval for each


def run_key(spec: Spec, seed: int, epochs: int, probe_epochs: int) -> str:
    return f"{spec.label()}|seed={seed}|epochs={epochs}|probe_epochs={probe_epochs}"


def plan(claims: list[Claim], seeds: int) -> Iterator[tuple[Spec, int, bool]]:
    """Every run the claims need once, as ``(spec, seed, with corruptions)``: the first seeds of all claims first."""
    corrupted = {sp for claim in claims if claim.needs_corruptions for sp in claim.specs}
    seen: set[tuple[Spec, int]] = set()
    blocks = [range(min(FIRST_BLOCK, seeds)), range(min(FIRST_BLOCK, seeds), seeds)]
    for block in blocks:
        for claim in claims:
            for seed in block:
                for sp in claim.specs:
                    if (sp, seed) not in seen:
                        seen.add((sp, seed))
                        yield sp, seed, sp in corrupted


def load_results(out: Path) -> dict[str, dict[str, Any]]:
    """Every finished run in ``out/results*.jsonl``, by key (a half-written last line is ignored)."""
    records: dict[str, dict[str, Any]] = {}
    for path in sorted(out.glob("results*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[record["key"]] = record
    return records


def by_spec(
    records: dict[str, dict[str, Any]], claims: list[Claim], epochs: int, probe_epochs: int, seeds: int
) -> dict[tuple[Spec, int], dict[str, Any]]:
    """The results of this table's runs by ``(spec, seed)``."""
    specs = {sp for claim in claims for sp in claim.specs}
    found = {}
    for sp in specs:
        for seed in range(seeds):
            record = records.get(run_key(sp, seed, epochs, probe_epochs))
            if record is not None:
                found[sp, seed] = record["metrics"]
    return found


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:+.2f}"


def table(claims: list[Claim], results: dict[tuple[Spec, int], dict[str, Any]], seeds: int) -> str:
    lines = [
        "| claim (A vs B) | paper / issue expects | mean A - B (95% CI), points | seeds | verdict | A, B (mean) |",
        "|---|---|---:|---:|---|---:|",
    ]
    for claim in claims:
        values, diff = evaluate(claim, results)
        if diff is None:
            lines.append(f"| {claim.label} | {claim.paper} | not run here | 0/{seeds} | | |")
            continue
        a = sum(v[0] for v in values.values()) / len(values)
        b = sum(v[1] for v in values.values()) / len(values)
        interval = f"{_fmt(diff.mean)} ({_fmt(diff.low)}, {_fmt(diff.high)})"
        verdict = claim.verdict(diff.sign)
        lines.append(
            f"| {claim.label} | {claim.paper} | {interval} | {diff.n}/{seeds} | {verdict} | {a:.2f}, {b:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--seeds", type=int, default=5, help="paired seeds 0 .. seeds-1")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of SupCon stage 1 and of cross-entropy")
    parser.add_argument("--probe-epochs", type=int, default=4, help="epochs of the linear stage")
    parser.add_argument("--claims", nargs="+", choices=[c.name for c in CLAIMS], help="default: all")
    parser.add_argument("--out", type=Path, default=Path("outputs/evidence"), help="results, table and figure")
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th planned run, from the i-th")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help=f"2 seeds, 1 + 1 epochs, claims {', '.join(QUICK)}")
    parser.add_argument("--report-only", action="store_true", help="no training: table and figure of what finished")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.probe_epochs = 2, 1, 1
        args.claims = args.claims or list(QUICK)
    if args.seeds < 1 or args.epochs < 1 or args.probe_epochs < 1:
        parser.error(
            f"--seeds, --epochs and --probe-epochs must be >= 1, got {args.seeds}, {args.epochs}, {args.probe_epochs}"
        )
    index, _, count = args.shard.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        parser.error(f"--shard must be i/n with 0 <= i < n, e.g. 0/2, got {args.shard!r}")
    shard, shards = int(index), int(count)
    claims = [c for c in CLAIMS if args.claims is None or c.name in args.claims]
    torch.set_num_threads(args.threads)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / ("results.jsonl" if shards == 1 else f"results-{shard}of{shards}.jsonl")
    start = time.perf_counter()
    if not args.report_only:
        done = load_results(args.out)
        todo = [r for i, r in enumerate(plan(claims, args.seeds)) if i % shards == shard]
        todo = [r for r in todo if run_key(r[0], r[1], args.epochs, args.probe_epochs) not in done]
        bar = tqdm(todo, desc="evidence runs", unit="run", dynamic_ncols=True)
        for sp, seed, corruptions in bar:
            bar.set_postfix_str(f"{sp.label()} seed {seed}")
            tic = time.perf_counter()
            metrics = run_once(sp, seed, args.epochs, args.probe_epochs, corruptions)
            record = {
                "key": run_key(sp, seed, args.epochs, args.probe_epochs),
                "spec": sp.label(),
                "seed": seed,
                "seconds": round(time.perf_counter() - tic, 1),
                "metrics": metrics,
            }
            with results_file.open("a") as f:
                f.write(json.dumps(record) + "\n")
            tqdm.write(f"{sp.label()} seed {seed}: top-1 {100 * metrics['top1']:.2f}% ({record['seconds']:.0f} s)")
    results = by_spec(load_results(args.out), claims, args.epochs, args.probe_epochs, args.seeds)
    text = table(claims, results, args.seeds)
    header = (
        f"`python benchmarks/evidence.py --seeds {args.seeds} --epochs {args.epochs} --probe-epochs "
        f"{args.probe_epochs}`: small CNN, batch 128 x 2 views, SupCon L_out T=0.1 then a linear stage of "
        f"{args.probe_epochs} epochs; CE end to end. Interval: {CI_METHOD} over the seeds. Machine: {machine()}."
    )
    (args.out / "evidence.md").write_text(header + "\n\n" + text + "\n")
    draw(claims, results, args.out / "evidence.png")
    print(
        f"\n{header}\n\n{text}\n\nWall time: {(time.perf_counter() - start) / 60:.1f} min; figure: "
        f"{args.out / 'evidence.png'}"
    )


if __name__ == "__main__":
    main()
