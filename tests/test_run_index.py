"""The run index agrees with the run folders: after runs are created, finished, renamed, deleted
and damaged, when another process writes runs, and when its own file is deleted or damaged."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_runs import age, fake_run, finish

from tlcore import run_index
from tlcore.run_index import RunIndex
from tlcore.runs import RunStore

REPO = Path(__file__).resolve().parents[1]


def listing(records) -> list[tuple]:
    """What a listing says of each run: enough to catch a stale or missing one."""
    return [(r.run_id, r.state, len(r.metrics), r.name, r.config.get("seed")) for r in records]


def fresh_index(root: Path, store: RunStore) -> RunIndex:
    """An index as a new process would have it: nothing in memory, only the file."""
    return RunIndex(root, store.load)


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


def test_index_agrees_with_folders_through_a_runs_life(store: RunStore) -> None:
    ids = [fake_run(store, i, "running" if i == 4 else "finished") for i in range(5)]
    assert listing(store.list()) == listing(store.read_all())
    assert [r.run_id for r in store.list()] == ids[::-1]  # newest first
    for rid in ids:  # as if written long ago: from now on only changed folders are read again
        age(store.path(rid))
    finish(store, ids[4], "finished", epochs=3)
    store.set_name(ids[0], "my best run")
    store.delete(ids[1])
    (store.path(ids[2]) / "config.json").write_text("{ not json")  # damaged: no longer a run
    new = fake_run(store, 9)
    expected = listing(store.read_all())
    assert listing(store.list()) == expected
    assert [r[0] for r in expected] == [new, ids[4], ids[3], ids[0]]
    assert next(r for r in store.list() if r.run_id == ids[4]).state == "finished"
    assert next(r for r in store.list() if r.run_id == ids[0]).name == "my best run"
    assert listing(fresh_index(store.root, store).records()) == expected  # and from its file


def test_a_run_whose_owner_died_reads_interrupted_from_the_index(store: RunStore) -> None:
    rid = fake_run(store, 1, "running")
    assert [r.state for r in store.active()] == ["running"]
    status = store.load(rid).status
    store.write_status(rid, {**status, "pid": 2**22 + 4321, "token": "gone", "pid_start": "1"})
    assert store.active() == []
    assert store.list()[0].state == "interrupted"


def test_unchanged_old_runs_are_not_read_again_and_the_poll_reads_only_active_runs(store: RunStore) -> None:
    ids = [fake_run(store, i) for i in range(30)]
    running = fake_run(store, 30, "running")
    for rid in [*ids, running]:
        age(store.path(rid))
    reads: list[str] = []
    index = RunIndex(store.root, lambda rid: reads.append(rid) or store.load(rid))
    assert len(index.records()) == 31 and len(reads) == 31
    reads.clear()
    assert len(index.records()) == 31
    assert reads == [running]  # the active run only (its owner may have died)
    reads.clear()
    assert [r.run_id for r in index.active()] == [running]
    assert reads == [running]
    finish(store, running, "finished")
    reads.clear()
    assert index.active() == [] and reads == [running]
    assert index.records()[0].state == "finished"


def test_a_new_run_from_elsewhere_shows_up_in_the_poll(store: RunStore) -> None:
    fake_run(store, 0)
    index = RunIndex(store.root, store.load)
    assert index.active() == []
    rid = fake_run(store, 1, "queued")  # another writer: the runs folder's own mtime moves
    assert [r.run_id for r in index.active()] == [rid]


@pytest.mark.parametrize("damage", ["delete", "garbage", "wrong schema", "empty"])
def test_index_file_deleted_or_damaged_is_rebuilt(store: RunStore, damage: str) -> None:
    ids = [fake_run(store, i) for i in range(6)]
    for rid in ids:
        age(store.path(rid))
    store.list()
    db = store.root / run_index.FOLDER / run_index.FILE
    assert db.is_file()
    if damage == "delete":
        db.unlink()
    elif damage == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    elif damage == "wrong schema":
        with sqlite3.connect(db) as con:
            con.execute("DROP TABLE runs")
            con.execute("CREATE TABLE runs (x)")
    else:
        db.write_bytes(b"")
    index = fresh_index(store.root, store)
    assert listing(index.records()) == listing(store.read_all())
    with sqlite3.connect(db) as con:  # rebuilt: a valid index with every run
        assert con.execute("SELECT count(*) FROM runs WHERE record IS NOT NULL").fetchone() == (6,)


def test_a_stale_row_is_not_trusted(store: RunStore) -> None:
    rid = fake_run(store, 0)
    age(store.path(rid), 120)
    store.list()  # the file now holds the run, unnamed, with the folder's old mtime
    store.set_name(rid, "renamed later")  # written after: the folder's mtime moves on
    assert fresh_index(store.root, store).records()[0].name == "renamed later"


def test_a_locked_index_file_never_blocks_a_listing_or_a_writer(store: RunStore) -> None:
    fake_run(store, 0)
    store.list()
    holder = sqlite3.connect(store.root / run_index.FOLDER / run_index.FILE, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a write
    try:
        started = time.monotonic()
        rid = fake_run(store, 1)
        records = fresh_index(store.root, store).records()
        assert time.monotonic() - started < 5
        assert rid in [r.run_id for r in records] and len(records) == 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()


WRITER = """
import sys, time
sys.path[:0] = [{repo!r}, {tests!r}]
from fake_runs import fake_run, finish
from tlcore.runs import RunStore
store = RunStore({root!r})
for i in range(100, 140):
    rid = fake_run(store, i, "running")
    store.list()  # this process keeps its own index, and writes the shared file too
    finish(store, rid, "finished" if i % 3 else "failed")
"""


def test_a_second_process_writing_runs_loses_none(store: RunStore) -> None:
    fake_run(store, 0)
    code = WRITER.format(repo=str(REPO), tests=str(REPO / "tests"), root=str(store.root))
    writer = subprocess.Popen([sys.executable, "-c", code])
    try:
        while writer.poll() is None:  # list while the other process writes
            store.list()
            store.active()
    finally:
        assert writer.wait(120) == 0
    expected = listing(store.read_all())
    assert len(expected) == 41
    assert listing(store.list()) == expected
    assert listing(fresh_index(store.root, store).records()) == expected
