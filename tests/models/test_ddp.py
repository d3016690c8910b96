"""DDP with the Lightning Trainer on 2 CPU processes reaches the same weights as 1 process with the doubled batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import run_worker

SCRIPT = Path(__file__).with_name("ddp_equivalence.py")
VALIDATE = Path(__file__).with_name("ddp_validate.py")


def _train(tmp_path: Path, devices: int, *extra: str, script: Path = SCRIPT) -> dict:
    out = tmp_path / f"{script.stem}_{devices}{''.join(extra).replace('-', '_')}.pt"
    run_worker(script, str(devices), str(out), *extra, cwd=tmp_path)
    result: dict = torch.load(out, weights_only=True)
    return result


def _max_relative_difference(a: dict, b: dict) -> float:
    """Over the weights and BatchNorm statistics; the queue's rows are in another order under DDP (rank order),
    which the loss ignores."""
    keys = [k for k in b if not k.startswith("queue.") and b[k].is_floating_point()]
    return max(((a[k] - b[k]).norm() / b[k].norm().clamp(min=1e-30)).item() for k in keys)


@pytest.mark.distributed
def test_ddp_two_processes_equal_one_process_with_global_batch(tmp_path: Path) -> None:
    single = _train(tmp_path, 1)
    ddp = _train(tmp_path, 2)
    local = _train(tmp_path, 2, "--local")
    assert single["global_batch"] == 16 and ddp["global_batch"] == 16 and local["global_batch"] == 8
    # The logged fraction of anchors with a class positive is the global batch's (4 classes x 4), not a rank's mean.
    assert single["class_positives"] == ddp["class_positives"] == 1.0 > local["class_positives"]
    assert _max_relative_difference(ddp["state_dict"], single["state_dict"]) < 1e-5
    # The control: contrasting only within each rank's 8 samples ends elsewhere.
    assert _max_relative_difference(local["state_dict"], single["state_dict"]) > 1e-3


@pytest.mark.slow  # `make test-slow`; the queue's loss is checked against the loop reference in tests/losses
@pytest.mark.distributed
def test_ddp_with_memory_queue_equals_one_process(tmp_path: Path) -> None:
    single = _train(tmp_path, 1, "--queue")
    ddp = _train(tmp_path, 2, "--queue")
    assert int(single["state_dict"]["queue.filled"]) == 64 == int(ddp["state_dict"]["queue.filled"])
    assert _max_relative_difference(ddp["state_dict"], single["state_dict"]) < 1e-5


@pytest.mark.slow  # `make test-slow`; GlobalBatchNorm's 2-process exactness stays in tests/models/test_batchnorm.py
@pytest.mark.distributed
def test_ddp_with_synchronised_batchnorm_equals_one_process(tmp_path: Path) -> None:
    single = _train(tmp_path, 1, "--batchnorm=global")
    synced = _train(tmp_path, 2, "--batchnorm=global")
    unsynced = _train(tmp_path, 2, "--batchnorm=local")
    assert synced["norm_during_fit"] == ["GlobalBatchNorm"] and unsynced["norm_during_fit"] == ["BatchNorm1d"]
    assert synced["norm_after_fit"] == ["BatchNorm1d"]  # reverted: checkpoints hold plain BatchNorm
    assert "encoder.net.1.running_var" in synced["state_dict"]
    assert _max_relative_difference(synced["state_dict"], single["state_dict"]) < 1e-5
    # The control: each rank normalising its own 8 samples ends elsewhere.
    assert _max_relative_difference(unsynced["state_dict"], single["state_dict"]) > 1e-3


@pytest.mark.distributed
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="PyTorch's SyncBatchNorm runs on GPUs only; needs 2")
def test_ddp_with_torch_sync_batchnorm_on_two_gpus_equals_one_process(tmp_path: Path) -> None:
    single = _train(tmp_path, 1, "--batchnorm=torch", "--gpu")
    synced = _train(tmp_path, 2, "--batchnorm=torch", "--gpu")
    assert synced["norm_during_fit"] == ["SyncBatchNorm"]
    assert _max_relative_difference(synced["state_dict"], single["state_dict"]) < 1e-5


@pytest.mark.distributed
def test_ddp_validation_counts_every_sample_once(tmp_path: Path) -> None:
    single = _train(tmp_path, 1, script=VALIDATE)
    ddp = _train(tmp_path, 2, script=VALIDATE)
    assert single["val_size"] == ddp["val_size"] == 91  # odd: a padded split would repeat one image
    for key in ("val/knn_top1", "val/knn_top5", "val/probe_top1", "val/probe_top5"):
        assert ddp["metrics"][key] == pytest.approx(single["metrics"][key], abs=1e-6), key
