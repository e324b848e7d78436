"""The run list without rereading every run: an index of a runs folder, refreshed by modification times.

Run folders stay the truth. The index keeps each run's record with its folder's signature (its
modification time, which every atomic write in it changes: tlcore writes each file to a temporary
name, then renames it); a listing stats each folder and rereads only the runs whose signature changed, plus the
active ones (queued or running: their owner may die without touching the folder). The Train
page's poll (`active`) rereads only the active runs, and rescans the folder only when its own
modification time says a run was added or removed.

The index lives in memory (one per runs folder per process) and in `<runs>/.index/runs.sqlite`
(Python's sqlite3), so a new process (the CLI, a restarted app) starts warm. Writers of runs
never touch it: a training process is never blocked by the index, and what it writes is found by
the next listing. A missing, damaged or older-format file is rebuilt from the folders; when it
cannot be written at once (another process holds its lock, a read-only disk) the listing goes on
from memory and the folders.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

from tlcore.runs import ACTIVE, RUN_ID_RE, RunRecord

FOLDER, FILE = ".index", "runs.sqlite"  # a sub-folder: its journal never changes the runs folder's mtime
FORMAT = "1"
# A folder changed less than this long ago may change again within the same clock tick without
# its mtime moving (as git's "racily clean" files): such runs are reread until they are older.
RACY_NS = 2_000_000_000


def signature(folder: str | os.PathLike) -> str | None:
    """The folder's modification time in ns (every atomic write in it moves it), or None when it is gone."""
    try:
        return str(os.stat(folder).st_mtime_ns)
    except OSError:
        return None


def _fresh(sig: str, now_ns: int) -> bool:
    """Whether a signature is old enough to trust (see RACY_NS)."""
    return now_ns - int(sig) > RACY_NS


class RunIndex:
    """The runs of one folder, kept current by `records()` (all) and `active()` (the poll)."""

    def __init__(self, root: str | os.PathLike, load):
        self.root = Path(root)
        self._load = load  # run id -> RunRecord (RunStore.load), raising on a missing or damaged run
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str | None, RunRecord | None]] = {}  # None record: not a run
        self._root_mtime: int | None = None
        self._order: list[str] | None = None  # run ids, newest first (a run's creation time never changes)
        self._active: set[str] = set()
        self._db_read = False

    # ---- queries ----

    def records(self) -> list[RunRecord]:
        """Every readable run, newest first; rereads only what changed since the last call."""
        with self._lock:
            self._refresh()
            return list(self._ordered())

    def active(self) -> list[RunRecord]:
        """The queued and running runs, newest first, rereading only those (and any new run).

        Costs the same with ten finished runs as with thousands, unless runs were added or
        removed since the last call (then the folder is rescanned, as `records` does).
        """
        with self._lock:
            root_mtime = self._stat_root()
            if root_mtime is None or root_mtime != self._root_mtime:
                self._refresh()
            else:
                now = time.time_ns()
                for run_id in list(self._active):
                    if self._reread(run_id, now) and run_id not in self._entries:
                        self._changed()  # its folder vanished between two polls
            records = [self._entries[rid][1] for rid in self._active]
            return sorted(records, key=lambda r: r.status.get("created", 0), reverse=True)

    # ---- keeping up with the folders ----

    def _stat_root(self) -> int | None:
        try:
            return os.stat(self.root).st_mtime_ns
        except OSError:
            return None

    def _refresh(self) -> None:
        if not self._db_read:
            self._entries.update(self._read_db())
            self._active = {rid for rid, (_, r) in self._entries.items() if r is not None and r.state in ACTIVE}
            self._db_read = True
            self._changed()
        root_mtime = self._stat_root()
        # A run created in the same clock tick as this scan would not move the mtime: the poll
        # rescans until the folder is older than that.
        self._root_mtime = root_mtime if root_mtime and time.time_ns() - root_mtime > RACY_NS else None
        if root_mtime is None:
            if self._entries:
                self._entries.clear()
                self._active.clear()
                self._changed()
            return
        now, seen, dirty = time.time_ns(), set(), []
        with os.scandir(self.root) as it:
            folders = [e for e in it if RUN_ID_RE.match(e.name) and e.is_dir(follow_symlinks=False)]
        for entry in folders:
            run_id = entry.name
            seen.add(run_id)
            old_sig, record = self._entries.get(run_id, (None, None))
            try:
                sig = str(entry.stat(follow_symlinks=False).st_mtime_ns)
            except OSError:
                sig = None
            if old_sig is not None and sig == old_sig and (record is None or record.state not in ACTIVE):
                continue
            if self._reread(run_id, now, sig):
                dirty.append(run_id)
        gone = [rid for rid in self._entries if rid not in seen]
        for run_id in gone:
            del self._entries[run_id]
            self._active.discard(run_id)
        if dirty or gone:
            self._changed()
            self._write_db(dirty, gone)

    def _reread(self, run_id: str, now_ns: int, sig: str | None = None) -> bool:
        """Read one run from its folder into the index; True if what the index holds changed."""
        sig = sig or signature(self.root / run_id)
        old = self._entries.get(run_id)
        try:
            record = self._load(run_id) if sig is not None else None
        except (ValueError, LookupError, OSError):
            record = None  # a foreign or damaged folder is not a run; it never hides the others
        if record is not None and record.state in ACTIVE:
            self._active.add(run_id)
        else:
            self._active.discard(run_id)
        if sig is None:
            self._entries.pop(run_id, None)
            return old is not None
        stored = sig if _fresh(sig, now_ns) else None
        self._entries[run_id] = (stored, record)
        if old is None or (old[1] is None) != (record is None):
            self._order = None  # a run appeared or became readable (or unreadable)
        return (old is None or old[0] != stored or old[1] is None or record is None
                or _as_row(old[1]) != _as_row(record))

    def _changed(self) -> None:
        self._order = None

    def _ordered(self) -> list[RunRecord]:
        if self._order is None:
            records = [r for _, r in self._entries.values() if r is not None]
            self._order = [r.run_id for r in sorted(records, key=lambda r: r.status.get("created", 0), reverse=True)]
        return [self._entries[rid][1] for rid in self._order]

    # ---- the file: a warm start for the next process ----

    @property
    def db_path(self) -> Path:
        return self.root / FOLDER / FILE

    def _connect(self) -> sqlite3.Connection:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        # A short timeout: a listing never waits long for another process's write.
        db = sqlite3.connect(self.db_path, timeout=0.5, isolation_level=None)
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, sig TEXT, record TEXT)")
        return db

    def _read_db(self) -> dict[str, tuple[str | None, RunRecord | None]]:
        """The rows of the index file, or {} (and the file rebuilt) when it is missing or damaged."""
        if not self.db_path.is_file():
            return {}
        try:
            db = self._connect()
            try:
                version = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
                if version != (FORMAT,):
                    raise sqlite3.DatabaseError(f"index format {version}, not {FORMAT}")
                rows = db.execute("SELECT run_id, sig, record FROM runs").fetchall()
                return {run_id: (sig, _from_row(run_id, record)) for run_id, sig, record in rows}
            finally:
                db.close()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return {}  # another process is writing it: read the folders this time
            self._discard()
        except (sqlite3.DatabaseError, ValueError, TypeError, KeyError):
            self._discard()  # damaged: rebuilt from the folders by this refresh
        except OSError:
            pass
        return {}

    def _write_db(self, dirty: list[str], gone: list[str]) -> None:
        rows = [(rid, self._entries[rid][0], _to_json(self._entries[rid][1])) for rid in dirty if rid in self._entries]
        gone = [*gone, *(rid for rid in dirty if rid not in self._entries)]
        try:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (FORMAT,))
                db.executemany("INSERT OR REPLACE INTO runs VALUES (?, ?, ?)", rows)
                db.executemany("DELETE FROM runs WHERE run_id = ?", [(rid,) for rid in gone])
                db.execute("COMMIT")
            finally:
                db.close()
        except sqlite3.OperationalError:
            pass  # locked by another process's write, or a read-only disk: memory and folders suffice
        except sqlite3.DatabaseError:
            self._discard()
        except OSError:
            pass

    def _discard(self) -> None:
        """Remove a damaged index file; the next write starts a new one."""
        for suffix in ("", "-journal", "-wal", "-shm"):
            try:
                os.unlink(f"{self.db_path}{suffix}")
            except OSError:
                pass


def _as_row(record: RunRecord) -> dict:
    return {"config": record.config, "status": record.status, "metrics": record.metrics,
            "class_names": record.class_names, "name": record.name}


def _to_json(record: RunRecord | None) -> str | None:
    return None if record is None else json.dumps(_as_row(record), default=str)


def _from_row(run_id: str, text: str | None) -> RunRecord | None:
    if text is None:
        return None
    row = json.loads(text)
    return RunRecord(run_id, row["config"], row["status"], row["metrics"], row["class_names"], row["name"])


_INDEXES: dict[Path, RunIndex] = {}
_INDEXES_LOCK = threading.Lock()


def index_for(root: str | os.PathLike, load) -> RunIndex:
    """The process-wide index of a runs folder (created on first use); `load` reads one run."""
    key = Path(root).resolve()
    with _INDEXES_LOCK:
        if key not in _INDEXES:
            _INDEXES[key] = RunIndex(key, load)
        return _INDEXES[key]
