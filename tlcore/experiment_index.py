"""Experiment records without rereading every file: each kept with its file's signature, per process.

The files in `<runs>/experiments/` stay the truth. A listing stats each file and rereads only the
ones whose signature (modification time, size, inode: every save is an atomic rename) changed or
is too recent to trust (run_index.RACY_NS); a damaged file is left out until it changes, and a
removed one drops out. The runs' states come from the run index (RunStore.list), not from each
run's files, so listing experiments costs about the same with one as with hundreds of old ones.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from tlcore.run_index import RACY_NS
from tlcore.runs import RUN_ID_RE, read_json

PATTERN = ("exp-", ".json")


class ExperimentFiles:
    """The raw records of one experiments folder (no run states), kept current by `records()`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[tuple | None, dict | None]] = {}  # file name -> (signature, record)

    def records(self) -> list[dict]:
        """Every readable record, in no particular order; rereads only files that changed."""
        with self._lock:
            try:
                with os.scandir(self.folder) as it:
                    files = [e for e in it if e.name.startswith(PATTERN[0]) and e.name.endswith(PATTERN[1])
                             and RUN_ID_RE.match(e.name[: -len(PATTERN[1])])]  # ids are safe names
            except OSError:  # no folder yet (or gone)
                self._entries.clear()
                return []
            now, seen = time.time_ns(), set()
            for entry in files:
                seen.add(entry.name)
                try:
                    st = entry.stat()
                except OSError:
                    continue  # removed meanwhile
                sig = (st.st_mtime_ns, st.st_size, st.st_ino)
                old = self._entries.get(entry.name)
                if old is not None and old[0] == sig:
                    continue
                trusted = sig if now - st.st_mtime_ns > RACY_NS else None  # reread until old enough
                self._entries[entry.name] = (trusted, self._read(Path(entry.path)))
            for name in [n for n in self._entries if n not in seen]:
                del self._entries[name]
            return [record for _, record in self._entries.values() if record is not None]

    @staticmethod
    def _read(path: Path) -> dict | None:
        try:
            record = read_json(path)
        except (ValueError, OSError):
            return None  # damaged: left out, read again once it changes
        return record if isinstance(record, dict) else None


_FOLDERS: dict[Path, ExperimentFiles] = {}
_FOLDERS_LOCK = threading.Lock()


def files_for(folder: str | os.PathLike) -> ExperimentFiles:
    """The process-wide record cache of an experiments folder (created on first use)."""
    key = Path(folder).resolve()
    with _FOLDERS_LOCK:
        if key not in _FOLDERS:
            _FOLDERS[key] = ExperimentFiles(key)
        return _FOLDERS[key]
