"""``lightning-supcon-eval``: compare checkpoints after training from the embeddings ``predict`` wrote, no model needed.

Write the embeddings of a training and a test split with the model (``--data.init_args.predict_split``, see
:class:`~lightning_supcon.callbacks.EmbeddingWriter`), then score them anywhere, e.g. on a laptop::

    for split in train val; do
      lightning-supcon predict --config configs/digits.yaml --ckpt_path last \\
        --data.init_args.predict_split $split \\
        --trainer.callbacks+=lightning_supcon.callbacks.EmbeddingWriter \\
        --trainer.callbacks.output_dir=outputs/digits/embeddings
    done
    lightning-supcon-eval --train outputs/digits/embeddings/embeddings_train.pt \\
        --test outputs/digits/embeddings/embeddings_val.pt --plot outputs/digits/embeddings/val_map.png

It prints a table of weighted kNN top-1/top-5, retrieval Precision@1, R-Precision and MAP@R, and k-means NMI/AMI
(:mod:`lightning_supcon.evaluation.report`; for multi-hot labels, the multi-label kNN's mAP, F1 and label accuracy
and the retrieval metrics, as the online evaluation logs them), and writes them as JSON (``--json``, default
``evaluation.json`` beside the test file). ``--ood FILE`` (embeddings of out-of-distribution samples, the same
format) adds the out-of-distribution AUROC, AUPR-in/out and FPR95 of the distance to the ``--ood-k``-th (default
50) nearest training feature, the test split in-distribution (Sun et al. 2022). ``python -m
lightning_supcon.evaluate`` is the same command. Errors (a missing file, another kind of file, splits of different
feature sizes) end with one ``lightning-supcon-eval: error:`` line and status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lightning_supcon.callbacks.embedding_map import (
    _TITLES,
    METHODS,
    keep_stratified_subset,
    plot_embedding,
    reduce_to_2d,
    umap_available,
)
from lightning_supcon.evaluation import EmbeddingsError, evaluate_embeddings, format_table, load_embeddings

PROG = "lightning-supcon-eval"


def parser() -> argparse.ArgumentParser:
    """The command's options."""
    description = (
        "Score the embeddings that `lightning-supcon predict` wrote for a training split (the kNN bank) and a test "
        "split, without the model: weighted kNN top-1/top-5, retrieval P@1, R-precision, MAP@R, k-means NMI/AMI; "
        "with --ood, out-of-distribution AUROC, AUPR-in/out and FPR95."
    )
    p = argparse.ArgumentParser(prog=PROG, description=description)
    p.add_argument("--train", required=True, help="embeddings of the training split (the kNN bank): .pt or .npz")
    p.add_argument("--test", required=True, help="embeddings of the split to evaluate: .pt or .npz")
    p.add_argument("--key", default="features", help="which tensor to evaluate: features (default), projections, ...")
    p.add_argument("--k", type=int, default=200, help="neighbours of the weighted kNN (default 200)")
    p.add_argument("--temperature", type=float, default=0.07, help="kNN vote temperature (default 0.07)")
    p.add_argument("--seed", type=int, default=0, help="random state of k-means and of the map (default 0)")
    p.add_argument("--ood", type=Path, default=None, help="embeddings of out-of-distribution samples: .pt or .npz")
    p.add_argument("--ood-k", type=int, default=50, help="OOD score: distance to the k-th training neighbour (50)")
    p.add_argument("--json", type=Path, default=None, help="JSON output (default: evaluation.json beside --test)")
    p.add_argument("--plot", type=Path, default=None, help="also draw a 2-D map of the test features to this PNG")
    p.add_argument("--plot-method", choices=METHODS, default="auto", help="auto: UMAP if installed, else t-SNE")
    p.add_argument(
        "--plot-points",
        type=int,
        default=2000,
        help="at most this many test samples on the map: a class-balanced sample, seeded by --seed (default 2000)",
    )
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load, evaluate, print the table, write the JSON (and the map); return the report."""
    train, test = load_embeddings(args.train, args.key), load_embeddings(args.test, args.key)
    if train.path.resolve() == test.path.resolve():
        print(f"{PROG}: warning: --train and --test are the same file: every kNN query finds itself.", file=sys.stderr)
    ood = load_embeddings(args.ood, args.key) if args.ood is not None else None
    if args.ood_k < 1:
        raise ValueError(f"Expected --ood-k to be a positive integer, but got {args.ood_k}")
    if args.plot_points < 3:
        raise ValueError(f"Expected --plot-points >= 3 (a map needs 3 points), but got {args.plot_points}")
    report = evaluate_embeddings(
        train, test, k=args.k, temperature=args.temperature, seed=args.seed, ood=ood, ood_k=args.ood_k
    )
    paths = {"train": str(train.path), "test": str(test.path)} | ({"ood": str(ood.path)} if ood is not None else {})
    report = paths | {"key": args.key} | report
    sizes = report["sizes"]
    kind = f", {sizes['labels']} labels per sample (multi-label)" if "labels" in sizes else ""
    print(
        f"{args.key} of {test.path} ({sizes['test']} x {sizes['dim']}), kNN bank {train.path} ({sizes['train']}){kind}"
    )
    if ood is not None:
        k = report["settings"]["ood_k"]
        print(
            f"out-of-distribution: {ood.path} ({sizes['ood']}), scored by the distance to the {k}-th training neighbour"
        )
    print(format_table(report))
    out = args.json or test.path.with_name("evaluation.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_strict_json(report), indent=2, allow_nan=False) + "\n")
    print(f"JSON: {out}")
    if args.plot is not None:
        method = args.plot_method
        if method == "auto":
            method = "umap" if umap_available() else "tsne"
        colours = torch.unique(test.labels, dim=0, return_inverse=True)[1] if test.multilabel else test.labels
        keys = torch.rand(len(colours), generator=torch.Generator().manual_seed(args.seed))
        _, colours, features = keep_stratified_subset(keys, colours, test.features, size=args.plot_points)
        points = reduce_to_2d(features, method=method, seed=args.seed)
        sample = (
            f"{len(features)} of {len(keys)}, class-balanced, seed {args.seed}; " if len(features) < len(keys) else ""
        )
        title = f"{_TITLES[method]} of {test.path.name} ({sample}{args.key})"
        names = None if test.multilabel else test.class_names  # multi-hot: a colour per label set, no legend names
        print(f"Map: {plot_embedding(points, colours, args.plot, title, names)}")
    return report


def _strict_json(value: Any) -> Any:
    """``value`` with every NaN float as ``None``: NaN (a metric without enough samples) is not JSON."""
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point; a user error ends with one line and status 2."""
    args = parser().parse_args(argv)
    try:
        run(args)
    except (EmbeddingsError, ValueError, OSError) as err:
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
