"""Measuring a row: wall and CPU time, other processes' load, and the row record."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

# ---- measuring ----------------------------------------------------------------------------


def _busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Meter:
    """Wall and CPU seconds of a block, and the share of the machine other processes used."""

    wall: float = 0.0
    cpu: float = 0.0
    others: float | None = None  # 0..1 of all cores, busy with someone else's work

    def __enter__(self) -> Meter:
        self._t, self._c, self._b = time.perf_counter(), time.process_time(), _busy_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._t
        self.cpu = time.process_time() - self._c
        busy = _busy_seconds()
        if busy is not None and self._b is not None and self.wall > 0:
            others = (busy - self._b - self.cpu) / (self.wall * (os.cpu_count() or 1))
            self.others = min(1.0, max(0.0, others))


@dataclass
class Row:
    """One line of the results table."""

    key: int
    seconds: float | None = None
    images: int | None = None  # images pushed through the model (for images/s)
    best_val_acc: float | None = None
    epochs: int | None = None
    cpu: float | None = None
    others: float | None = None
    value: str = ""  # the measured quantity when it is not a duration (latency, memory)
    rss: int | None = None  # peak resident memory in bytes (row 8)
    notes: list[str] = field(default_factory=list)

    @property
    def per_epoch(self) -> float | None:
        return self.seconds / self.epochs if self.seconds and self.epochs else None

    def measured(self, meter: Meter) -> Row:
        self.seconds, self.cpu, self.others = meter.wall, meter.cpu, meter.others
        return self


