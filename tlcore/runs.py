"""Runs on disk: one folder per run, every write atomic, readable while half-written.

A run folder holds `config.json`, `status.json` (state, owner process, summary, log),
`metrics.json` (one row per finished epoch), `classes.json` and, once trained,
`model.safetensors` and `val_results.json` (per-image validation results of the best epoch). A run recorded as running whose owner process is gone reads back as
`interrupted`, with the epochs it had finished.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

# torch and safetensors are imported by the two methods that read or write weights: listing
# runs (`python -m tlcore runs`, the pages' polls) must not pay torch's 1.5 s import.
if TYPE_CHECKING:
    import torch

# Identifies this process's runs even if the OS later reuses its pid.
PROCESS_TOKEN = uuid.uuid4().hex
ACTIVE = ("queued", "running")
FINAL = ("finished", "failed", "cancelled", "interrupted")
# The best epoch's per-image validation results, as JSON: {"format": 1, "epoch": best epoch
# (1-based), "classes": [names], "items": [file path (folders, zips) or int row of the
# validation split (built-in arrays)], "labels": [true label], "probs": [[probability per
# class], 6 decimals]}; the three lists share one order, and skipped files are in none.
VAL_RESULTS = "val_results.json"
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class RunNotFound(LookupError):
    """No run with that id in the runs folder."""


class RunDamaged(ValueError):
    """A run's saved files cannot be read as what they should be."""


class AmbiguousRun(LookupError):
    """A run-id prefix matches several runs; the message lists them."""


def validate_run_id(run_id: str) -> str:
    """Return `run_id` if it is a safe folder name, else raise ValueError (never a path)."""
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id) or ".." in run_id:
        raise ValueError(f"invalid run id {run_id!r}: letters, digits, '.', '_' and '-' only")
    return run_id


def write_json(path: Path, data) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, default=str)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: Path, default=None):
    """Read JSON, or `default` when the file is missing."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


NAME_FILE = "name.json"  # {"name": "..."}: the user's own name for a run
MAX_NAME = 80
# A request that whichever process trains a run stop it (the app after a restart, a terminal, a
# torchrun run): that process's JobManager looks for it between batches, every CANCEL_POLL_S.
CANCEL_REQUEST = "cancel.request"
CANCEL_POLL_S = 0.5


def read_name(folder: Path) -> str:
    """The user's name for the run in `folder`, or "" (none given, or an unreadable file)."""
    try:
        data = read_json(folder / NAME_FILE, {})
    except (ValueError, OSError):
        return ""
    name = data.get("name") if isinstance(data, dict) else None
    return name.strip()[:MAX_NAME] if isinstance(name, str) else ""


def _process_start(pid: int) -> str | None:
    """The kernel's start time of a process (guards against pid reuse); None off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner() -> dict:
    """Who is running a run: this process."""
    pid = os.getpid()
    return {"pid": pid, "token": PROCESS_TOKEN, "pid_start": _process_start(pid)}


def owner_alive(info: dict) -> bool:
    """Whether the process that owns a run still exists."""
    pid = info.get("pid")
    if pid is None:
        return False
    if pid == os.getpid():
        return info.get("token") == PROCESS_TOKEN
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = info.get("pid_start")
    return start is None or start == _process_start(pid)


@dataclass
class RunRecord:
    """Everything saved about one run."""

    run_id: str
    config: dict
    status: dict
    metrics: list[dict] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    name: str = ""  # the user's own name for the run ("" when none was given)

    @property
    def state(self) -> str:
        return self.status.get("status", "unknown")

    def snapshot(self) -> dict:
        """The run as one dict, in the shape of `JobManager.snapshot` for a live run."""
        return {"run_id": self.run_id, "config": self.config, **self.status, "metrics": self.metrics,
                "name": self.name}


class RunStore:
    """The runs folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def new_run_id(self, backbone: str, strategy: str) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return validate_run_id(f"{stamp}-{backbone}-{strategy}-{uuid.uuid4().hex[:6]}")

    def path(self, run_id: str) -> Path:
        return self.root / validate_run_id(run_id)

    def create(self, run_id: str, config: dict) -> Path:
        """Make a run's folder, or take over one `reserve`d for it; FileExistsError if the id is taken."""
        folder = self.path(run_id)
        if not (read_json(folder / "status.json", {}) or {}).get("reserved"):
            folder.mkdir(parents=True, exist_ok=False)
        write_json(folder / "config.json", config)
        write_json(folder / "metrics.json", [])
        self.write_status(run_id, {"status": "queued", "created": time.time(), **owner()})
        return folder

    def reserve(self, run_id: str, config: dict) -> Path:
        """A queued run's folder that the process launched to train it takes over (`create`)."""
        folder = self.create(run_id, config)
        self.write_status(run_id, {"status": "queued", "created": time.time(), **owner(), "reserved": True})
        return folder

    def write_status(self, run_id: str, status: dict) -> None:
        write_json(self.path(run_id) / "status.json", status)

    def write_metrics(self, run_id: str, rows: list[dict]) -> None:
        write_json(self.path(run_id) / "metrics.json", rows)

    def write_classes(self, run_id: str, names: list[str]) -> None:
        write_json(self.path(run_id) / "classes.json", names)

    def save_weights(self, run_id: str, state: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        folder = self.path(run_id)
        tmp = folder / ".model.safetensors.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
        os.replace(tmp, folder / "model.safetensors")

    def load_weights(self, run_id: str) -> dict[str, torch.Tensor]:
        """The run's fine-tuned weights (safetensors: tensors only, no code can ride along)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.path(run_id) / "model.safetensors"
        if not path.is_file():
            raise RunNotFound(f"run {run_id} has no saved weights (it did not finish an epoch)")
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise RunDamaged(f"run {run_id}'s weights file is damaged or not safetensors ({exc}): "
                              "train the run again") from None

    def save_val_results(self, run_id: str, results: dict) -> None:
        """Write the best epoch's per-image validation results (see VAL_RESULTS) atomically."""
        write_json(self.path(run_id) / VAL_RESULTS, results)

    def load_val_results(self, run_id: str) -> dict | None:
        """The run's per-image validation results, or None (runs made before they were saved)."""
        return read_json(self.path(run_id) / VAL_RESULTS)

    def exists(self, run_id: str) -> bool:
        return (self.path(run_id) / "config.json").is_file()

    def load(self, run_id: str) -> RunRecord:
        """Read a run; one whose owner died mid-run reads as `interrupted`."""
        folder = self.path(run_id)
        config = read_json(folder / "config.json")
        if config is None:
            raise RunNotFound(f"no run {run_id!r} in {self.root}")
        status = read_json(folder / "status.json", {}) or {}
        if status.get("status") in ACTIVE and not owner_alive(status):
            status = {**status, "status": "interrupted",
                      "message": "the process running it stopped (server restarted or killed)"}
        return RunRecord(run_id, config, status, read_json(folder / "metrics.json", []) or [],
                         read_json(folder / "classes.json", []) or [], read_name(folder))

    def list(self) -> list[RunRecord]:
        """Every readable run, newest first, from the folder's index (see run_index): only runs
        whose folders changed since the last listing are read again. Treat the records as read-only."""
        from tlcore.run_index import index_for  # run_index builds on this module

        return index_for(self.root, self.load).records()

    def active(self) -> list[RunRecord]:
        """The queued and running runs, newest first; its cost does not grow with the ended runs."""
        from tlcore.run_index import index_for

        return index_for(self.root, self.load).active()

    def read_all(self) -> list[RunRecord]:
        """Every readable run read from its files, newest first: what the index must agree with."""
        if not self.root.is_dir():
            return []
        records = []
        for folder in self.root.iterdir():
            if folder.is_dir() and RUN_ID_RE.match(folder.name) and (folder / "config.json").is_file():
                try:
                    records.append(self.load(folder.name))
                except (ValueError, OSError):
                    continue  # a foreign or damaged folder is not a run; it never hides the others
        return sorted(records, key=lambda r: r.status.get("created", 0), reverse=True)

    # ---- what the user does to finished runs: name, delete, find by prefix ----

    def set_name(self, run_id: str, name: str) -> str:
        """Give a run the user's own name (one line, at most MAX_NAME characters); "" removes it."""
        if not self.exists(run_id):
            raise RunNotFound(f"no run {run_id!r} in {self.root}")
        clean = " ".join(str(name).split())[:MAX_NAME]
        write_json(self.path(run_id) / NAME_FILE, {"name": clean})
        return clean

    def request_cancel(self, run_id: str) -> None:
        """Ask the process that trains a queued or running run to stop it, whichever process it is.

        Raises:
            RunNotFound: no such run.
            ValueError: the run has ended; the message says how.
        """
        record = self.load(run_id)
        if record.state not in ACTIVE:
            raise ValueError(f"run {run_id} is {record.state}: only a queued or running run can be stopped")
        (self.path(run_id) / CANCEL_REQUEST).touch()

    def cancel_requested(self, run_id: str) -> bool:
        return (self.path(run_id) / CANCEL_REQUEST).exists()

    def delete(self, run_id: str) -> None:
        """Remove a run's folder and everything in it; an active run must be cancelled first."""
        record = self.load(run_id)
        if record.state in ACTIVE:
            raise ValueError(f"run {run_id} is {record.state}: cancel it first, then delete it")
        folder = self.path(run_id)
        # Rename first: the run vanishes from listings at once even if removing its files is slow.
        trash = folder.with_name(f".deleted-{run_id}-{uuid.uuid4().hex[:6]}")
        os.replace(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def find(self, prefix: str) -> str:
        """The one run id that is `prefix` or starts with it.

        Raises:
            ValueError: `prefix` has characters no run id has ('/', '..').
            RunNotFound: no run matches.
            AmbiguousRun: several do; the message lists them (up to 10).
        """
        prefix = validate_run_id(str(prefix).strip())  # a prefix is never a path either
        if self.exists(prefix):
            return prefix
        ids = []
        if self.root.is_dir():
            ids = sorted(f.name for f in self.root.iterdir() if f.name.startswith(prefix)
                         and RUN_ID_RE.match(f.name) and (f / "config.json").is_file())
        if len(ids) == 1:
            return ids[0]
        if not ids:
            raise RunNotFound(f"no run id starts with {prefix!r} in {self.root}: `python -m tlcore runs` lists them")
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        raise AmbiguousRun(f"{prefix!r} matches {len(ids)} runs: {shown}: give more of the id")
