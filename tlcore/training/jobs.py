"""Background training jobs: a process-wide, thread-safe manager the pages and the CLI share.

Runs wait in a queue and `max_workers` threads train them (one at a time by default: on a
2-core CPU two runs side by side are each slower than one after the other). A worker never
dies silently: any exception becomes a `failed` event with its message. A run over several
processes (GPUs) is launched as a torchrun subprocess instead and followed through its folder
(launch.py); the worker waits for it, so it still runs one at a time with the others.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from tlcore.models.weights import WeightsUnavailable
from tlcore.runs import CANCEL_POLL_S, RunRecord, RunStore, validate_run_id
from tlcore.training import launch
from tlcore.training.config import TrainConfig
from tlcore.training.device import configure_threads, tune_allocator
from tlcore.training.events import RunRecorder
from tlcore.training.train import Cancelled, TrainingError, train

# How long one wait lasts before the main thread looks at signals again (see JobManager.wait).
_WAIT_SLICE = 0.2

EXPECTED_ERRORS = (TrainingError, WeightsUnavailable, ValueError, LookupError, OSError)


@dataclass
class Job:
    run_id: str
    config: TrainConfig
    recorder: RunRecorder
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    claimed: bool = False  # taken off the queue, by a worker or by a cancel (manager lock)
    failure: str | None = None  # stopped for this reason, not by the user: ends failed, not cancelled
    processes: int = 1  # over 1: a torchrun subprocess trains it (launch.py), not a worker thread


class JobManager:
    """Starts, cancels and reports runs; one instance per runs folder per process."""

    def __init__(self, runs_dir: str | Path, max_workers: int = 1):
        # Before any worker thread exists: the allocator settings must cover the threads'
        # memory too (see tune_allocator).
        tune_allocator()
        configure_threads()
        self.store = RunStore(runs_dir)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._workers = [
            threading.Thread(target=self._work, name=f"tlcore-worker-{i}", daemon=True) for i in range(max_workers)
        ]
        for w in self._workers:
            w.start()

    # ---- commands ----

    def submit(self, config: TrainConfig, listener=None, run_id: str | None = None, processes: int = 1) -> str:
        """Validate, record and queue a run; returns its id at once.

        `listener(kind, data)`, when given, is subscribed before the run can start, so it sees
        every event (of a run in this process: a launched one's events are in its own process).
        `run_id` names the run (default: a new one); ValueError if that run exists. With
        `processes` over 1 the run trains in a torchrun subprocess of that many processes (one
        per GPU) that this manager starts, follows through the run folder and stops on cancel.
        """
        config.validate()
        launch.check(config, processes)
        run_id = validate_run_id(run_id) if run_id else self.store.new_run_id(config.backbone, config.strategy)
        recorded = config.to_dict()
        if processes > 1:
            recorded["distributed"] = launch.planned(config, processes)
        try:
            (self.store.reserve if processes > 1 else self.store.create)(run_id, recorded)
        except FileExistsError:
            raise ValueError(f"run {run_id} already exists in {self.store.root}: pick another id, or leave "
                             "it out for a new one") from None
        job = Job(run_id, config, RunRecorder(self.store, run_id), processes=processes)
        if listener is not None:
            job.recorder.subscribe(listener)
        with self._lock:
            self._jobs[run_id] = job
        self._queue.put(job)
        return run_id

    def cancel(self, run_id: str, failure: str | None = None) -> bool:
        """Stop a run: a queued one at once, a running one within one batch.

        With `failure`, the run ends `failed` with that message instead of `cancelled` (it was
        stopped for a reason that is not the user's wish, e.g. torchrun stopping its processes).
        Returns False if the run is not active here.
        """
        with self._lock:
            job = self._jobs.get(run_id)
            if job is None or job.done.is_set():
                return False
            job.failure = job.failure or failure
            job.stop.set()
            queued = not job.claimed
            job.claimed = True  # a worker that dequeues it later skips it
        if queued:
            try:
                job.recorder.emit("cancelled", {"message": "cancelled before it started", "epochs": 0})
            finally:
                job.done.set()
        return True

    def stopping(self, run_id: str) -> bool:
        """Whether a run of this manager was asked to stop and has not ended yet (it ends within a batch)."""
        with self._lock:
            job = self._jobs.get(run_id)
        return job is not None and job.stop.is_set() and not job.done.is_set()

    def wait(self, run_id: str, timeout: float | None = None) -> bool:
        """Block until the run ends; True if it did within `timeout`.

        Waits in short slices: the kernel may hand Ctrl-C's SIGINT to any thread (training,
        prefetch), and a main thread blocked in one long wait would never run Python's handler,
        so the CLI's KeyboardInterrupt (cancel the run) would never come.
        """
        with self._lock:
            job = self._jobs.get(run_id)
        if job is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _WAIT_SLICE if deadline is None else min(_WAIT_SLICE, deadline - time.monotonic())
            if job.done.wait(max(0.0, left)):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def subscribe(self, run_id: str, listener) -> None:
        """Get `listener(kind, data)` for each event of an active run (called from its thread)."""
        self._jobs[run_id].recorder.subscribe(listener)

    # ---- queries ----

    def active(self) -> list[str]:
        """Ids of runs queued or running in this process."""
        with self._lock:
            return [rid for rid, job in self._jobs.items() if not job.done.is_set()]

    def snapshot(self, run_id: str) -> dict:
        """Live state of a run: from memory while it is here, else from disk."""
        with self._lock:
            job = self._jobs.get(run_id)
        if job is not None and job.processes == 1:
            return {"run_id": run_id, "config": job.config.to_dict(), **job.recorder.snapshot()}
        return self.store.load(run_id).snapshot()  # a launched run writes its state there

    def list_runs(self) -> list[RunRecord]:
        """Every run in the folder (from all sessions and processes), newest first."""
        return self.store.list()

    def close(self, timeout: float | None = 30) -> bool:
        """Cancel this manager's runs and end its worker threads; True if they all ended in time.

        A closed manager is forgotten by `get_manager`, so the next call for its folder makes a new one.
        """
        with _MANAGERS_LOCK:
            for key in [k for k, m in _MANAGERS.items() if m is self]:
                del _MANAGERS[key]
        for run_id in self.active():
            self.cancel(run_id)
        for _ in self._workers:
            self._queue.put(None)  # one stop sentinel per worker, behind the queued (cancelled) runs
        for w in self._workers:
            w.join(timeout)
        return not any(w.is_alive() for w in self._workers)

    # ---- the worker ----

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:  # close()
                return
            try:
                self._run(job)
            finally:
                job.done.set()

    def _run(self, job: Job) -> None:
        with self._lock:
            if job.claimed:  # cancelled while queued: already recorded
                return
            job.claimed = True
        if self.store.cancel_requested(job.run_id):  # asked from another process while it waited here
            job.recorder.emit("cancelled", {"message": "cancelled before it started", "epochs": 0})
            return
        try:
            (self._launch_and_follow if job.processes > 1 else self._train_and_record)(job)
        except Exception as exc:  # noqa: BLE001 - saving or recording failed: the run fails, the worker goes on
            self._fail(job, exc)

    def _fail(self, job: Job, exc: Exception) -> None:
        """End a run `failed` after an error outside training (e.g. a full disk while saving)."""
        hint = f": free space in {self.store.root} and run it again" if isinstance(exc, OSError) else ""
        try:
            job.recorder.emit("failed", {"message": f"could not record the run ({type(exc).__name__}: {exc}){hint}"})
        except Exception:  # noqa: BLE001
            # The disk refuses even the status file: the live state (what the pages show)
            # already says failed; stderr keeps the why.
            traceback.print_exc()

    def _train_and_record(self, job: Job) -> None:
        emit = job.recorder.emit
        job.recorder.subscribe(self._on_event(job))
        try:
            result = train(job.config, emit, job.stop)
        except Cancelled as c:
            self._save(job, c.result)
            if job.failure:
                emit("failed", {**c.result.summary, "message": job.failure})
            else:
                emit("cancelled", {**c.result.summary, "message": "cancelled by the user"})
        except EXPECTED_ERRORS as exc:
            emit("failed", {"message": str(exc)})
        except Exception as exc:  # a bug: keep the traceback in the run's log, not a dead thread
            emit("log", {"message": traceback.format_exc(limit=8)})
            emit("failed", {"message": f"{type(exc).__name__}: {exc}"})
        else:
            self._save(job, result)
            emit("finished", result.summary)

    def _launch_and_follow(self, job: Job) -> None:
        """Train in a torchrun subprocess until it ends or is stopped; record the end it could not."""
        cmd = launch.command(job.config, job.run_id, self.store.root, job.processes)
        proc = launch.start(cmd, self.store.path(job.run_id) / launch.LOG)
        code = launch.follow(proc, job.stop)
        launch.record_end(self.store, job.run_id, code, job.stop.is_set(), job.failure)

    def _save(self, job: Job, result) -> None:
        """The best epoch's weights and per-image validation results, when there is one."""
        if result.best_state is not None:
            self.store.save_weights(job.run_id, result.best_state)
        if result.val_results is not None:
            self.store.save_val_results(job.run_id, result.val_results)

    def _on_event(self, job: Job):
        checked = [time.monotonic()]

        def listener(kind: str, data: dict) -> None:
            if kind == "started":
                self.store.write_classes(job.run_id, data["class_names"])
            # Another process (the app after a restart, `python -m tlcore cancel`) may have asked
            # for this run to stop: look for its request between batches, at most every CANCEL_POLL_S.
            if time.monotonic() - checked[0] >= CANCEL_POLL_S:
                checked[0] = time.monotonic()
                if self.store.cancel_requested(job.run_id):
                    self.cancel(job.run_id)
        return listener


_MANAGERS: dict[Path, JobManager] = {}
_MANAGERS_LOCK = threading.Lock()


def get_manager(runs_dir: str | Path = "runs", max_workers: int = 1) -> JobManager:
    """The process-wide manager for a runs folder (created on first use)."""
    key = Path(runs_dir).resolve()
    with _MANAGERS_LOCK:
        if key not in _MANAGERS:
            _MANAGERS[key] = JobManager(key, max_workers)
        return _MANAGERS[key]
