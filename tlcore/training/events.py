"""The training event vocabulary and the lock-guarded store that pages read.

The trainer emits events; a `RunRecorder` folds them into the run's live state (read by other
threads through `snapshot`) and writes what must survive to the `RunStore` as it arrives.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable

from tlcore.runs import RunStore, owner

# started, batch, epoch (ended), finished, failed, cancelled; log carries a line for the user.
EVENT_KINDS = ("started", "batch", "epoch", "log", "finished", "failed", "cancelled")
Emit = Callable[[str, dict], None]


class RunRecorder:
    """Live state of one run, fed by events, persisted as they come."""

    def __init__(self, store: RunStore, run_id: str):
        self.store = store
        self.run_id = run_id
        self._lock = threading.Lock()
        self._state = {"status": "queued", "created": time.time(), **owner(), "progress": {},
                       "log": [], "skipped": 0}
        self._metrics: list[dict] = []
        self._listeners: list[Callable[[str, dict], None]] = []

    def subscribe(self, listener: Callable[[str, dict], None]) -> None:
        """Call `listener(kind, data)` on every event (from the training thread)."""
        self._listeners.append(listener)

    def emit(self, kind: str, data: dict | None = None) -> None:
        """Record one event. Raises ValueError for a kind outside EVENT_KINDS."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event {kind!r}")
        data = data or {}
        with self._lock:
            persist_status = self._apply(kind, data)
            status = copy.deepcopy(self._state) if persist_status else None
            metrics = list(self._metrics) if kind == "epoch" else None
        # Disk writes happen outside the lock so readers never wait on I/O.
        if metrics is not None:
            self.store.write_metrics(self.run_id, metrics)
        if status is not None:
            self.store.write_status(self.run_id, status)
        for listener in self._listeners:
            listener(kind, data)

    def _apply(self, kind: str, data: dict) -> bool:
        s = self._state
        s["updated"] = time.time()
        if kind == "batch":
            s["progress"] = data
            return False
        if kind == "log":
            s["log"].append(data["message"])
        elif kind == "started":
            s.update(status="running", started=time.time(), **data)
        elif kind == "epoch":
            self._metrics.append(data)
            s["epochs_done"] = len(self._metrics)
        else:  # finished, failed, cancelled
            s.update(status=kind, ended=time.time(), **data)
        return True

    def snapshot(self) -> dict:
        """A copy of the live state plus the metrics so far, safe to read from any thread."""
        with self._lock:
            return {**copy.deepcopy(self._state), "metrics": list(self._metrics)}

    @property
    def status(self) -> str:
        with self._lock:
            return self._state["status"]
