"""The global-batch loss under 2 gloo processes equals one process holding the whole batch, gradients included.

Each rank computes features with an einsum (whose gradient reaches the gather non-contiguous: the case where
``torch.distributed.nn.functional.all_gather`` goes wrong on gloo), the loss with ``gather_distributed=True``,
then averages parameter gradients over ranks exactly as DDP does. Everything runs in one spawn for speed.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor

from lightning_supcon import supcon_loss
from lightning_supcon.utils import distributed
from tests.helpers import free_port

WORLD = 2
CASES = [
    {"views": v, "supervision": s, "contrast_mode": m, "summation": su, "sizes": sz}
    for v, s, m, su, sz in itertools.product(
        [1, 2, 3], ["labels", "simclr", "sparse"], ["all", "one"], ["out", "in"], [(4, 4), (5, 3)]
    )
]
# reduction="sum" (the cases above are "mean"): fused and dense paths, supervised and SimCLR, even and ragged.
SUM_CASES = [
    {"views": 2, "supervision": s, "contrast_mode": "all", "summation": su, "sizes": sz, "reduction": "sum"}
    for s, su, sz in itertools.product(["labels", "simclr"], ["out", "in"], [(4, 4), (5, 3)])
]
CASES += SUM_CASES
# Issue 17: unknown labels (-1 at the same local positions on both ranks: local group ids would collide),
# weighted masks, multi-hot labels, and the class-averaged denominator.
VARIANT_CASES = [
    {"views": v, "supervision": s, "contrast_mode": "all", "summation": su, "sizes": sz}
    for v, s, su, sz in itertools.product(
        [1, 2], ["partial", "weighted", "jaccard", "any"], ["out", "in"], [(4, 4), (5, 3)]
    )
] + [
    {"views": v, "supervision": s, "contrast_mode": m, "summation": su, "sizes": (5, 3), "denominator": "class_mean"}
    for v, s, m, su in itertools.product([1, 2], ["labels", "partial", "simclr"], ["all", "one"], ["out", "in"])
]
CASES += VARIANT_CASES
PARTIAL_CONTROL = VARIANT_CASES[2]  # 1 view, unknown labels, L_in, 4 + 4


def _case_inputs(case: dict) -> tuple[Tensor, Tensor | None, Tensor]:
    """The global batch of a case: inputs (B, V, 6), labels (or a weighted mask's rows) or None, the weight (8, 6)."""
    gen = torch.Generator().manual_seed(1)
    batch = sum(case["sizes"])
    x = torch.randn(batch, case["views"], 6, generator=gen, dtype=torch.float64)
    weight = torch.randn(8, 6, generator=gen, dtype=torch.float64)
    labels: Tensor | None
    if case["supervision"] == "labels":
        labels = torch.arange(batch) % 3
    elif case["supervision"] == "sparse":  # several anchors without any positive
        labels = torch.tensor([0, 1, 0, 2, 3, 4, 5, 0])[:batch]
    elif case["supervision"] == "partial":
        labels = torch.tensor([0, -1, 1, -1, 0, -1, 1, -1])[:batch]
    elif case["supervision"] == "weighted":  # rows of the (B, B_global) mask
        levels = torch.tensor([0.0, 0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
        labels = levels[torch.randint(0, 5, (batch, batch), generator=gen)]
    elif case["supervision"] in ("jaccard", "any"):
        labels = torch.randint(0, 2, (batch, 4), generator=gen)
        labels[1] = 0  # a sample without labels
    else:
        labels = None
    return x, labels, weight


def _loss_and_grad(x: Tensor, labels: Tensor | None, weight: Tensor, case: dict) -> tuple[Tensor, Tensor]:
    weight = weight.clone().requires_grad_()
    feats = F.normalize(torch.einsum("bvi,oi->bvo", x, weight), dim=-1)
    weighted = case["supervision"] == "weighted"
    loss = supcon_loss(
        feats,
        None if weighted else labels,
        mask=labels if weighted else None,
        contrast_mode=case["contrast_mode"],
        summation=case["summation"],
        denominator=case.get("denominator", "all"),
        reduction=case.get("reduction", "mean"),
        gather_distributed=True,
        multilabel="any" if case["supervision"] == "any" else "jaccard",
    )
    loss.backward()
    assert weight.grad is not None
    return loss.detach(), weight.grad


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    results = []
    for case in CASES:
        x, labels, weight = _case_inputs(case)
        start = sum(case["sizes"][:rank])
        stop = start + case["sizes"][rank]
        local_labels = None if labels is None else labels[start:stop]
        loss, grad = _loss_and_grad(x[start:stop], local_labels, weight, case)
        # What DDP does: average gradients (and, for logging, the loss) over ranks.
        dist.all_reduce(grad)
        dist.all_reduce(loss)
        results.append((loss / WORLD, grad / WORLD))
    # Control: local-only contrast must NOT match the global batch, or the test above could not fail.
    case = CASES[24]  # 2 views, labels, all anchors, L_out, 4 + 4, mean
    x, labels, weight = _case_inputs(case)
    half = case["sizes"][0]
    local = x[:half] if rank == 0 else x[half:]
    local_labels = None if labels is None else (labels[:half] if rank == 0 else labels[half:])
    weight_local = weight.clone().requires_grad_()
    feats = F.normalize(torch.einsum("bvi,oi->bvo", local, weight_local), dim=-1)
    supcon_loss(feats, local_labels, gather_distributed=False).backward()
    assert weight_local.grad is not None
    dist.all_reduce(weight_local.grad)
    results.append((weight_local.grad / WORLD, weight_local.grad / WORLD))
    gathered = distributed.gather(torch.arange(3) + 10 * rank)  # no-grad path, equal sizes
    results.append((gathered, gathered))
    # Control for unknown labels: groups made unique per rank only (from the local index) collide across ranks.
    case = PARTIAL_CONTROL
    x, labels, weight = _case_inputs(case)
    assert labels is not None
    local_labels = labels[:4] if rank == 0 else labels[4:]
    colliding = torch.where(local_labels == -1, 1000 + torch.arange(4), local_labels)
    _, grad = _loss_and_grad(x[:4] if rank == 0 else x[4:], colliding, weight, case)
    dist.all_reduce(grad)
    results.append((grad / WORLD, grad / WORLD))
    if rank == 0:
        torch.save(results, Path(out_dir) / "results.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Tensor, Tensor]]:
    out_dir = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return torch.load(out_dir / "results.pt")


@pytest.mark.distributed
@pytest.mark.parametrize("index", range(len(CASES)), ids=[str(c) for c in CASES])
def test_global_batch_gradient_is_exact(distributed_results: list, index: int) -> None:
    case = CASES[index]
    x, labels, weight = _case_inputs(case)
    expected_loss, expected_grad = _loss_and_grad(x, labels, weight, case)
    loss, grad = distributed_results[index]
    torch.testing.assert_close(loss, expected_loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-12)


@pytest.mark.distributed
def test_plain_gather_concatenates_in_rank_order(distributed_results: list) -> None:
    gathered, _ = distributed_results[len(CASES) + 1]
    assert gathered.tolist() == [0, 1, 2, 10, 11, 12]


@pytest.mark.distributed
def test_local_only_contrast_differs(distributed_results: list) -> None:
    case = CASES[24]  # 2 views, labels, all anchors, L_out, 4 + 4
    x, labels, weight = _case_inputs(case)
    _, expected_grad = _loss_and_grad(x, labels, weight, case)
    local_grad, _ = distributed_results[len(CASES)]
    assert not torch.allclose(local_grad, expected_grad, rtol=1e-3, atol=1e-6)


@pytest.mark.distributed
def test_unknown_labels_groups_unique_across_ranks(distributed_results: list) -> None:
    """Rank-local unique groups for label -1 would make rank 0's and rank 1's unlabelled samples positives."""
    case = PARTIAL_CONTROL
    assert case["supervision"] == "partial" and case["sizes"] == (4, 4) and case["views"] == 1
    x, labels, weight = _case_inputs(case)
    _, expected_grad = _loss_and_grad(x, labels, weight, case)
    colliding_grad, _ = distributed_results[len(CASES) + 2]
    assert not torch.allclose(colliding_grad, expected_grad, rtol=1e-3, atol=1e-6)


def test_single_process_is_identity() -> None:
    t = torch.randn(3, 2, requires_grad=True)
    assert distributed.gather(t) is t
    assert distributed.world_size() == 1 and distributed.rank() == 0
    assert distributed.gather_sizes(3, t.device) == [3]
