"""Training faults that reach the user: out-of-memory, two runs at once."""

from __future__ import annotations

import time

import pytest
import torch

from tlcore.training import train as train_module
from tlcore.training.jobs import JobManager
from tlcore.training.train import TrainingError


def test_gpu_out_of_memory_fails_with_a_smaller_batch_hint(run_training, monkeypatch):
    def oom(*_args, **_kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_module, "train_one_epoch", oom)
    with pytest.raises(TrainingError, match="out of GPU memory at batch size 16.*smaller batch size"):
        run_training()


def test_out_of_memory_run_is_failed_in_the_store_and_the_next_run_works(tiny_config, tl_env, monkeypatch):
    real = train_module.train_one_epoch
    calls = {"n": 0}

    def oom_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", oom_once)
    manager = JobManager(tl_env.runs)
    first = manager.submit(tiny_config())
    assert manager.wait(first, 60)
    snap = manager.snapshot(first)
    assert snap["status"] == "failed"
    assert "smaller batch size" in snap["message"]
    second = manager.submit(tiny_config())
    assert manager.wait(second, 60)
    assert manager.snapshot(second)["status"] == "finished"


def test_two_runs_submitted_at_once_on_one_worker_queue_then_both_finish(tiny_config, tl_env):
    manager = JobManager(tl_env.runs, max_workers=1)
    a = manager.submit(tiny_config(epochs=3))
    b = manager.submit(tiny_config(epochs=3, seed=1))
    # While the first trains, the second waits its turn.
    deadline = time.time() + 30
    while manager.snapshot(a)["status"] == "queued" and time.time() < deadline:
        time.sleep(0.01)
    assert manager.snapshot(b)["status"] == "queued"
    assert manager.wait(a, 60) and manager.wait(b, 60)
    ra, rb = manager.store.load(a), manager.store.load(b)
    assert ra.state == rb.state == "finished"
    assert ra.config["seed"] == 0 and rb.config["seed"] == 1
    assert len(ra.metrics) == len(rb.metrics) == 3
    assert ra.metrics != rb.metrics  # each run wrote its own folder
