"""Background jobs and the run store: files on disk, live snapshots, cancel, failures, recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tlcore.runs import RunStore, read_json, write_json
from tlcore.training import jobs
from tlcore.training.jobs import JobManager

RUN_FILES = {"config.json", "status.json", "metrics.json", "classes.json", "model.safetensors"}


def _wait_for(predicate, timeout: float = 60, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s")


def test_submitted_run_finishes_with_its_files(tmp_path: Path, tiny_config) -> None:
    manager = JobManager(tmp_path / "runs")
    run_id = manager.submit(tiny_config(epochs=2))
    assert manager.wait(run_id, timeout=60)
    folder = tmp_path / "runs" / run_id
    assert RUN_FILES <= {p.name for p in folder.iterdir()}
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]

    status = read_json(folder / "status.json")
    assert status["status"] == "finished" and status["epochs"] == 2
    assert len(read_json(folder / "metrics.json")) == 2
    assert read_json(folder / "classes.json") == [str(i) for i in range(10)]
    assert read_json(folder / "config.json")["backbone"] == "simple_cnn"

    record = RunStore(tmp_path / "runs").load(run_id)
    assert record.state == "finished" and len(record.metrics) == 2
    assert manager.active() == [] and [r.run_id for r in manager.list_runs()] == [run_id]
    assert manager.snapshot(run_id)["status"] == "finished"


def test_events_reach_subscribers_in_order_ending_with_finished(tmp_path: Path, tiny_config, monkeypatch) -> None:
    gate = threading.Event()
    real_train = jobs.train

    def gated_train(*args, **kwargs):
        gate.wait(30)  # lets the test subscribe before the first event
        return real_train(*args, **kwargs)

    monkeypatch.setattr(jobs, "train", gated_train)
    manager = JobManager(tmp_path / "runs")
    run_id = manager.submit(tiny_config(epochs=2))
    kinds: list[str] = []
    manager.subscribe(run_id, lambda kind, data: kinds.append(kind))
    gate.set()
    assert manager.wait(run_id, timeout=60)
    kinds = [k for k in kinds if k != "log"]
    assert kinds[0] == "started" and kinds[-1] == "finished" and kinds.count("epoch") == 2
    assert kinds.index("batch") < kinds.index("epoch")


def test_snapshot_is_readable_from_another_thread_while_running(tmp_path: Path, tiny_config) -> None:
    manager = JobManager(tmp_path / "runs")
    run_id = manager.submit(tiny_config(epochs=6))
    seen_status, seen_epochs, progress = set(), [], []
    while not manager.wait(run_id, timeout=0.005):
        snap = manager.snapshot(run_id)
        seen_status.add(snap["status"])
        seen_epochs.append(len(snap["metrics"]))
        if snap.get("progress"):
            progress.append(snap["progress"])
    assert "running" in seen_status
    assert seen_epochs == sorted(seen_epochs), "metrics went backwards"
    assert progress and {"phase", "epoch", "batch", "batches"} <= set(progress[-1])
    final = manager.snapshot(run_id)
    assert final["status"] == "finished" and len(final["metrics"]) == 6


def test_cancel_mid_run_keeps_what_was_learned(tmp_path: Path, tiny_config) -> None:
    manager = JobManager(tmp_path / "runs")
    run_id = manager.submit(tiny_config(epochs=200))
    _wait_for(lambda: manager.snapshot(run_id).get("epochs_done", 0) >= 1)
    t0 = time.monotonic()
    assert manager.cancel(run_id)
    assert manager.wait(run_id, timeout=10)
    assert time.monotonic() - t0 < 5

    record = RunStore(tmp_path / "runs").load(run_id)
    assert record.state == "cancelled"
    assert 1 <= len(record.metrics) < 200
    assert record.status["message"] == "cancelled by the user"
    assert (tmp_path / "runs" / run_id / "model.safetensors").is_file()
    assert not manager.cancel(run_id), "a finished run cannot be cancelled again"


def test_a_run_asked_to_stop_reads_stopping_until_it_ends(tmp_path: Path, tiny_config, monkeypatch) -> None:
    """Every page showing the run says it stops while its current (long) batch ends."""
    started, batch_done = threading.Event(), threading.Event()
    real_train = jobs.train

    def one_long_batch_first(cfg, emit, stop, *args, **kwargs):
        started.set()
        batch_done.wait(30)  # the stop is only seen between batches
        return real_train(cfg, emit, stop, *args, **kwargs)

    monkeypatch.setattr(jobs, "train", one_long_batch_first)
    manager = JobManager(tmp_path / "runs")
    run_id = manager.submit(tiny_config(epochs=50))
    assert started.wait(30) and not manager.stopping(run_id)
    assert manager.cancel(run_id)
    assert manager.stopping(run_id)  # asked, still in its batch
    batch_done.set()
    assert manager.wait(run_id, timeout=30)
    assert not manager.stopping(run_id) and manager.snapshot(run_id)["status"] == "cancelled"


def test_cancel_before_it_starts(tmp_path: Path, tiny_config) -> None:
    manager = JobManager(tmp_path / "runs")
    first = manager.submit(tiny_config(epochs=50))
    queued = manager.submit(tiny_config(epochs=1))
    assert manager.cancel(queued)
    manager.cancel(first)
    assert manager.wait(queued, timeout=30)
    record = RunStore(tmp_path / "runs").load(queued)
    assert record.state == "cancelled" and record.metrics == []


def test_exception_in_training_fails_the_run_and_the_worker_lives_on(tmp_path: Path, tiny_config,
                                                                      monkeypatch) -> None:
    real_train = jobs.train

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(jobs, "train", boom)
    manager = JobManager(tmp_path / "runs")
    failed = manager.submit(tiny_config())
    assert manager.wait(failed, timeout=30)
    record = RunStore(tmp_path / "runs").load(failed)
    assert record.state == "failed" and "boom" in record.status["message"]
    assert any("Traceback" in line for line in record.status["log"])

    monkeypatch.setattr(jobs, "train", real_train)
    ok = manager.submit(tiny_config(epochs=1))
    assert manager.wait(ok, timeout=60)
    assert manager.snapshot(ok)["status"] == "finished"


def test_expected_error_fails_with_its_message(tmp_path: Path, tiny_config) -> None:
    manager = JobManager(tmp_path / "runs")
    run_id = manager.submit(tiny_config(batch_size=4096, image_size=1024))
    assert manager.wait(run_id, timeout=30)
    snap = manager.snapshot(run_id)
    assert snap["status"] == "failed" and "smaller batch size" in snap["message"]
    assert not any("Traceback" in line for line in snap["log"])


def test_two_runs_at_once_keep_their_own_folders(tmp_path: Path, tiny_config, image_folder: Path,
                                                  monkeypatch) -> None:
    both_started = threading.Barrier(2, timeout=30)  # each run waits here until the other has started too
    real_train = jobs.train
    at_once = []

    def train_side_by_side(config, emit, stop):
        both_started.wait()
        at_once.append(config.data)
        return real_train(config, emit, stop)

    monkeypatch.setattr(jobs, "train", train_side_by_side)
    manager = JobManager(tmp_path / "runs", max_workers=2)
    digits = manager.submit(tiny_config(epochs=1))
    photos = manager.submit(tiny_config(epochs=2, data=str(image_folder), seed=5))
    assert digits != photos
    assert manager.wait(digits, timeout=60) and manager.wait(photos, timeout=60)
    assert sorted(at_once) == sorted(["digits", str(image_folder)]), "the two runs did not start side by side"
    store = RunStore(tmp_path / "runs")
    a, b = store.load(digits), store.load(photos)
    assert a.state == b.state == "finished"
    assert a.config["data"] == "digits" and b.config["data"] == str(image_folder)
    assert a.class_names == [str(i) for i in range(10)] and b.class_names == ["cat", "coffee", "rocket"]
    assert (len(a.metrics), len(b.metrics)) == (1, 2)
    assert store.load_weights(digits)["fc.weight"].shape[0] == 10
    assert store.load_weights(photos)["fc.weight"].shape[0] == 3


def test_status_writes_are_atomic_for_a_reader_polling_them(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    store.create("r1", {"backbone": "simple_cnn"})
    small = {"status": "running"}
    big = {"status": "running", "log": ["x" * 200] * 200}
    done = threading.Event()

    def writer() -> None:
        i = 0
        while not done.is_set():
            store.write_status("r1", big if i % 2 else small)
            store.write_metrics("r1", [{"epoch": e, "val_acc": 0.5} for e in range(i % 50)])
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    folder = store.path("r1")
    try:
        for _ in range(3000):
            for name in ("status.json", "metrics.json"):
                with open(folder / name, encoding="utf-8") as f:
                    json.load(f)  # a half-written file raises JSONDecodeError here
    finally:
        done.set()
        thread.join()
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))


def test_write_json_leaves_no_temp_file_on_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_json(tmp_path / "x.json", {("tuple", "key"): 1})  # JSON keys must be strings
    assert list(tmp_path.iterdir()) == []


def _cli_training(runs: Path, epochs: int, env: dict) -> subprocess.Popen:
    """A tiny `python -m tlcore train` in its own process, writing to `runs`."""
    return subprocess.Popen(
        [sys.executable, "-m", "tlcore", "train", "--data", "digits", "--backbone", "simple_cnn",
         "--strategy", "scratch", "--epochs", str(epochs), "--subset", "20", "--image-size", "32",
         "--device", "cpu", "--runs-dir", str(runs)],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _first_epoch_on_disk(runs: Path, proc: subprocess.Popen) -> str:
    """The id of the run `proc` trains, once its first epoch is on disk (fails if `proc` died)."""
    def one_epoch_on_disk():
        for metrics in runs.glob("*/metrics.json"):
            if len(read_json(metrics, []) or []) >= 1:
                return metrics.parent.name
        assert proc.poll() is None, proc.stderr.read().decode()
        return None
    return _wait_for(one_epoch_on_disk, timeout=90, interval=0.1)


@pytest.mark.slow
def test_killed_process_reads_back_as_interrupted(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = _cli_training(runs, 50, {"TLCORE_RUNS": str(runs)})
    try:
        run_id = _first_epoch_on_disk(runs, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)  # reaped: its pid no longer exists

    store = RunStore(runs)
    record = store.load(run_id)
    assert record.state == "interrupted"
    assert 1 <= len(record.metrics) < 50
    assert "stopped" in record.status["message"]
    assert [(r.run_id, r.state) for r in store.list()] == [(run_id, "interrupted")]


def test_close_cancels_the_runs_and_ends_the_workers(tmp_path: Path, tiny_config) -> None:
    manager = jobs.get_manager(tmp_path / "runs", max_workers=2)
    running = manager.submit(tiny_config(epochs=200))
    queued = [manager.submit(tiny_config(epochs=200)) for _ in range(2)]
    _wait_for(lambda: manager.snapshot(running).get("epochs_done", 0) >= 1)
    assert manager.close(timeout=20)
    assert not any(w.is_alive() for w in manager._workers)
    store = RunStore(tmp_path / "runs")
    assert [store.load(r).state for r in (running, *queued)] == ["cancelled"] * 3
    assert jobs.get_manager(tmp_path / "runs") is not manager, "a closed manager was handed out again"


def test_a_run_training_in_another_process_stops_when_asked(tmp_path: Path) -> None:
    """`python -m tlcore cancel` (as the app's Stop button after a restart) stops a CLI run between batches."""
    runs = tmp_path / "runs"
    proc = _cli_training(runs, 200, {"TLCORE_THREADS": "1"})
    try:
        run_id = _first_epoch_on_disk(runs, proc)
        asked = subprocess.run([sys.executable, "-m", "tlcore", "cancel", run_id[:20], "--runs-dir", str(runs)],
                               capture_output=True, text=True, timeout=60)
        assert asked.returncode == 0 and f"asked the process training {run_id} to stop" in asked.stdout, asked.stderr
        assert proc.wait(timeout=30) == 1  # the CLI's exit status for a run that did not finish
    finally:
        proc.kill()
    record = RunStore(runs).load(run_id)
    assert record.state == "cancelled" and record.status["message"] == "cancelled by the user"
    assert 1 <= len(record.metrics) < 200
    again = subprocess.run([sys.executable, "-m", "tlcore", "cancel", run_id, "--runs-dir", str(runs)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "is cancelled: only a queued or running run can be stopped" in again.stderr


def test_a_queued_run_asked_to_stop_by_another_process_never_starts(tmp_path: Path, tiny_config) -> None:
    manager = JobManager(tmp_path / "runs")
    first = manager.submit(tiny_config(epochs=50))
    queued = manager.submit(tiny_config(epochs=1))
    RunStore(tmp_path / "runs").request_cancel(queued)  # another process's store, the same folder
    manager.cancel(first)
    assert manager.wait(queued, timeout=30)
    record = RunStore(tmp_path / "runs").load(queued)
    assert record.state == "cancelled" and record.metrics == []
    assert record.status["message"] == "cancelled before it started"
