"""One run over several processes with torchrun (DDP, gloo on CPU): 2 processes on this 2-core machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn

from tlcore.runs import RunStore
from tlcore.training import distributed

REPO = Path(__file__).resolve().parents[1]
TINY = ("--data", "digits", "--subset", "5", "--image-size", "32", "--device", "cpu", "--seed", "3")


def _tlcore(nproc: int, runs: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    cmd = [sys.executable, *launcher, "-m", "tlcore", "train", *TINY, *args, "--runs-dir", str(runs), "--json"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=REPO,
                          env={**os.environ, "TLCORE_THREADS": "1", "PYTHONFAULTHANDLER": "1", **(env or {})})


def _result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    """Feature extraction: a linear head on cached features, no dropout, no BatchNorm in training.

    Both runs see the same batches in the same order (the union of the two slices is the batch)
    and DDP's averaged gradient is the global batch's, so the runs differ only in the order of
    float sums: per-image probabilities agree to 1e-4 and the validation accuracy is equal.
    Each run computes its own features (separate caches): two ranks compute half each.
    """
    args = ("--backbone", "efficientnet_lite0", "--strategy", "feature_extraction", "--epochs", "2",
            "--batch-size", "47")  # 50 images: slices of 24 and 23, then 3 on rank 0 and none on rank 1
    cache1, cache2 = tmp_path / "cache1", tmp_path / "cache2"
    one = _tlcore(1, tmp_path / "one", *args, env={"TLCORE_CACHE": str(cache1)})
    two = _tlcore(2, tmp_path / "two", *args, env={"TLCORE_CACHE": str(cache2)})
    r1, r2 = _result(one), _result(two)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    assert r1["status"] == r2["status"] == "finished"
    assert r2["best_val_acc"] == r1["best_val_acc"] and r2["best_epoch"] == r1["best_epoch"]

    store = RunStore(tmp_path / "two")
    assert [r.run_id for r in store.list()] == [r2["run_id"]]  # one run folder, written by rank 0 only
    config = store.load(r2["run_id"]).config
    assert config["distributed"] == {"world_size": 2, "global_batch_size": 47, "batch_size_per_process": 24,
                                     "backend": "gloo"}
    assert RunStore(tmp_path / "one").load(r1["run_id"]).config["distributed"] is None
    v1, v2 = RunStore(tmp_path / "one").load_val_results(r1["run_id"]), store.load_val_results(r2["run_id"])
    assert v2["items"] == v1["items"] and v2["labels"] == v1["labels"]  # every image once, in order
    assert torch.allclose(torch.tensor(v2["probs"]), torch.tensor(v1["probs"]), atol=1e-4)

    # The gathered features are the single process's, row for row; rank 0 alone wrote them.
    [f1] = (cache1 / "features").glob("*.safetensors")
    [f2] = (cache2 / "features").glob("*.safetensors")
    t1, t2 = load_file(f1), load_file(f2)
    # Up to float rounding: Lite0 runs channels_last on CPU, whose kernels round differently for
    # each rank's 24/23-row batches than for the whole split's (measured: at most 1.5e-5, on
    # features up to 4.3); a row out of place would differ by whole units.
    for k in ("train_x", "val_x"):
        assert torch.allclose(t1[k], t2[k], atol=5e-5), k
    again = _tlcore(2, tmp_path / "two", *args, env={"TLCORE_CACHE": str(cache2)})
    assert again.returncode == 0 and "feature cache hit" in again.stderr, again.stderr[-3000:]
    assert _result(again)["best_val_acc"] == r2["best_val_acc"]


@pytest.mark.slow
def test_two_process_gradual_unfreezes_on_both_ranks(tmp_path: Path) -> None:
    """After the head epoch every group trains on both ranks, re-wrapped by DDP, and the ranks stay equal.

    The head epoch trains the DDP-wrapped head on cached features, the next one the re-wrapped
    whole model. Without the re-wrap the backbone's gradients are not reduced, the ranks' weights
    drift apart and World.end_epoch fails the run.
    """
    proc = _tlcore(2, tmp_path, "--backbone", "simple_cnn", "--strategy", "gradual", "--epochs", "2",
                   "--head-epochs", "1", "--batch-size", "8", "--lr", "1e-3")
    result = _result(proc)
    assert proc.returncode == 0 and result["status"] == "finished", (result, proc.stderr[-3000:])
    assert "epoch 2: unfroze all" in proc.stderr
    assert "(feature cache, then full forward)" in proc.stderr and "epoch 2: the backbone trains" in proc.stderr
    assert result["epochs"] == 2


@pytest.mark.slow
def test_a_rank_that_dies_fails_the_run_with_a_message(tmp_path: Path) -> None:
    proc = _tlcore(2, tmp_path, "--backbone", "simple_cnn", "--strategy", "scratch", "--epochs", "3",
                   "--batch-size", "8", env={"TLCORE_TEST_EXIT_AFTER": "1:1"})
    assert proc.returncode != 0
    [record] = RunStore(tmp_path).list()
    assert record.state == "failed", (record.status, proc.stderr[-3000:])
    message = record.status.get("message") or ""
    assert "process" in message and ("torchrun" in message or "lost the others" in message), message
    assert len(record.metrics) == 1  # the epoch both ranks finished


@pytest.fixture
def one_process_group(tmp_path: Path):
    """A gloo process group of one in this process (DDP works with one rank), torn down after."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_wrap_rewraps_when_what_trains_changes(one_process_group) -> None:
    world = distributed.World(0, 2)  # size 2: take the DDP path (the group itself has one rank)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    first = world.wrap(model)
    assert isinstance(first, nn.parallel.DistributedDataParallel)
    assert world.wrap(model) is first  # nothing changed: the same wrapper
    model[0].requires_grad_(True)  # gradual's unfreeze
    second = world.wrap(model)
    assert second is not first
    second(torch.randn(5, 3)).sum().backward()
    assert model[0].weight.grad is not None


def test_shards_cover_each_batch_once_and_rows_come_back_in_order() -> None:
    batches = [torch.tensor([4, 0, 7, 2, 9]), torch.tensor([1, 3, 8, 5, 6])]
    slices = [distributed.World(r, 2).shard_batches(batches) for r in range(2)]
    for b, batch in enumerate(batches):
        got = torch.cat([slices[r][b][0] for r in range(2)])
        assert sorted(got.tolist()) == sorted(batch.tolist())
        assert slices[0][b][1] == slices[1][b][1] == 5
    # A last batch under 2 per process: pairs (the odd one joins the last), never a slice of one.
    small = [distributed.World(r, 3)._slice(torch.tensor([5, 6, 7, 8, 9])).tolist() for r in range(3)]
    assert small == [[5, 6], [7, 8, 9], []]
    rows = [distributed.World(r, 3).rows(7).tolist() for r in range(3)]
    assert rows == [[0, 3, 6], [1, 4], [2, 5]]
    single = distributed.World()
    x = torch.arange(6.0)
    assert single.my_rows(x) is x and single.gather_rows(x, 6) is x


@pytest.mark.slow
def test_ctrl_c_to_torchrun_cancels_the_run_with_its_epochs_so_far(tmp_path: Path) -> None:
    """torchrun forwards SIGINT to every process; rank 0 stops between batches and records `cancelled`."""
    import signal
    import time

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tlcore",
           "train", *TINY, "--backbone", "simple_cnn", "--strategy", "scratch", "--epochs", "200",
           "--batch-size", "8", "--runs-dir", str(tmp_path), "--json"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "TLCORE_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            records = RunStore(tmp_path).list()
            if records and records[0].metrics:
                break
            time.sleep(1)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    [record] = RunStore(tmp_path).list()
    assert record.state == "cancelled", (record.status, err[-3000:])
    assert 1 <= len(record.metrics) < 200

