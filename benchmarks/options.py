"""Measured effect of ``channels_last``, ``bf16-mixed`` precision and ``torch.compile`` of the encoder on the
throughput of a SupCon training step, side by side with the plain setting in one run.

    python benchmarks/options.py                   # ResNet-18 (CIFAR stem), 32 px, batch 32 x 2 views: CPU-sized
    python benchmarks/options.py --device cuda --encoder resnet50 --stem imagenet --image-size 224 --batch 128 \\
        --num-workers 8 --variants plain,channels_last+bf16

The setup is pipeline (b) of ``throughput.py``: ``SupConModule`` trained by the Lightning ``Trainer`` on
synthetic images with device-side batched augmentation. A variant is a ``+``-joined set of options: ``plain``
(fp32, contiguous), ``channels_last`` (``SupConModule(channels_last=True)``), ``bf16`` (``Trainer(precision=
"bf16-mixed")``), ``compile`` (``SupConModule(compile_encoder=True)``, compiled during the warm-up steps). Each
variant runs in its own process; a variant that fails or runs past ``--timeout`` (``torch.compile`` can, on a
CPU) shows ``failed: <reason>`` in the table. Images/s are medians over ``--windows`` timed windows after
``--warmup`` steps; the table gives the ratio to ``plain`` and the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from common import add_setup_args, machine, markdown_table, rate_text, run_worker, setup_argv, summary

OPTIONS = ("plain", "channels_last", "bf16", "compile")
DEFAULT_VARIANTS = "plain,channels_last,bf16,compile,channels_last+bf16"


def parse_variant(variant: str) -> set[str]:
    """The options of a ``+``-joined variant name.

    Raises:
        ValueError: For an unknown option.
    """
    options = set(variant.split("+"))
    unknown = options - set(OPTIONS)
    if unknown:
        raise ValueError(f"Expected options among {OPTIONS} joined by '+', but got {variant!r}.")
    return options - {"plain"}


def worker(variant: str, args: argparse.Namespace) -> dict[str, object]:
    from throughput import trainer_rates  # the Lightning setup, imported only where it runs

    options = parse_variant(variant)
    rates = trainer_rates(
        args,
        precision="bf16-mixed" if "bf16" in options else "32-true",
        channels_last="channels_last" in options,
        compile_encoder="compile" in options,
    )
    return {"variant": variant, "rates": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setup_args(parser, batch=32)  # CPU-sized by default; pass --batch 256 on a GPU
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated; options joined by '+'")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed to each variant's process")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for variant in variants:
        try:
            parse_variant(variant)
        except ValueError as err:
            parser.error(str(err))
    print(
        f"SupCon training step options: {args.encoder} ({args.stem} stem), {args.image_size} px, batch "
        f"{args.batch} x {args.views} views, Lightning Trainer, device augmentation, device {args.device}"
    )
    print(
        f"machine: {machine(args.device)}; {args.warmup} warm-up steps, then {args.windows} windows of {args.steps} "
        "steps; each variant in its own process\n",
        flush=True,
    )
    results = {v: run_worker(__file__, ["--worker", v, *setup_argv(args)], timeout=args.timeout) for v in variants}
    baseline = results.get("plain")
    base = statistics.median(baseline["rates"]) if isinstance(baseline, dict) else None
    rows = []
    for variant, result in results.items():
        if isinstance(result, str):
            rows.append([variant, result, "", ""])
            continue
        median, spread = summary(result["rates"])
        rows.append([variant, rate_text(median), spread, f"{median / base:.2f}x" if base else ""])
    print(markdown_table(["setting", "images/s (median)", "range over windows", "vs plain"], rows))


if __name__ == "__main__":
    main()
