"""ExperimentStore.list from its per-process record cache (experiment_index.py): it agrees with the
files after experiments are saved, changed, damaged and removed, also when another process writes
them, and it reads only what changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_runs import age, fake_run, finish

from tlcore import experiment_index
from tlcore.experiments import ExperimentStore
from tlcore.runs import RunStore

REPO = Path(__file__).resolve().parent.parent


def save(store: ExperimentStore, n: int, run_ids: list[str]) -> str:
    exp_id = f"exp-20990101-0000{n:02d}-abcdef"
    store.save({"format": 1, "experiment_id": exp_id, "created": 1000.0 + n, "finished": None, "data": "digits",
                "grid": {"strategies": ["scratch"], "backbones": ["simple_cnn"], "seeds": list(range(len(run_ids)))},
                "runs": [{"run_id": r, "seed": i} for i, r in enumerate(run_ids)]})
    return exp_id


def old(store: ExperimentStore) -> None:
    """Age every file and folder: signatures younger than run_index.RACY_NS are never trusted."""
    for folder in [store.folder, *store.folder.iterdir(), *store.runs.root.iterdir()]:
        age(folder)


def fresh(store: ExperimentStore) -> list[dict]:
    """What the files say, read from scratch (the listing before the cache)."""
    records = [store.load(p.stem) for p in store.folder.glob("exp-*.json") if _readable(p)]
    return sorted(records, key=lambda r: r.get("created", 0), reverse=True)


def _readable(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except ValueError:
        return False


@pytest.fixture
def store(tmp_path: Path) -> ExperimentStore:
    return ExperimentStore(tmp_path / "runs")


def test_listing_agrees_with_the_files_through_changes(store: ExperimentStore) -> None:
    assert store.list() == []  # no folder yet
    runs = [fake_run(store.runs, i) for i in range(4)]
    a, b = save(store, 1, runs[:2]), save(store, 2, runs[2:])
    assert store.list() == fresh(store) and [r["experiment_id"] for r in store.list()] == [b, a]
    assert store.list()[0]["status"] == "finished"
    store.save({**store.load(a), "cancelled": True})  # changed
    assert store.list() == fresh(store) and store.list()[1]["cancelled"]
    (store.folder / f"{b}.json").write_text("{ not json")  # damaged: left out, the other still listed
    assert [r["experiment_id"] for r in store.list()] == [a] == [r["experiment_id"] for r in fresh(store)]
    save(store, 2, runs[2:])  # repaired
    assert store.list() == fresh(store) and len(store.list()) == 2
    os.unlink(store.folder / f"{a}.json")  # removed
    assert [r["experiment_id"] for r in store.list()] == [b]


def test_run_states_come_from_the_run_index_and_follow_the_runs(store: ExperimentStore) -> None:
    runs = [fake_run(store.runs, 0), fake_run(store.runs, 1, "running", epochs=1)]
    exp = save(store, 1, runs)
    [listed] = store.list()
    assert listed["status"] == "running" and listed["states"] == {runs[0]: "finished", runs[1]: "running"}
    finish(store.runs, runs[1], "failed")
    [listed] = store.list()
    assert listed["status"] == "failed" and listed == store.load(exp)
    RunStore(store.runs.root).delete(runs[0])
    [listed] = store.list()
    assert listed["states"][runs[0]] == "missing" and listed == store.load(exp)


def test_unchanged_files_are_not_read_again(store: ExperimentStore, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = [fake_run(store.runs, i) for i in range(3)]
    ids = [save(store, n, runs) for n in range(20)]
    old(store)
    store.list()
    reads: list[Path] = []
    real = experiment_index.read_json
    monkeypatch.setattr(experiment_index, "read_json", lambda path: reads.append(path) or real(path))
    assert len(store.list()) == 20 and reads == []
    save(store, 3, runs[:1])  # one experiment rewritten
    time.sleep(0.01)
    assert len(store.list()) == 20 and [p.name for p in reads] == [f"{ids[3]}.json"]


def test_an_experiment_written_by_another_process_is_listed(store: ExperimentStore) -> None:
    run = fake_run(store.runs, 0)
    store.list()
    code = ("import sys; from tlcore.experiments import ExperimentStore as S; s = S(sys.argv[1]); "
            "s.save({'format': 1, 'experiment_id': 'exp-20990101-000099-abcdef', 'created': 5000.0, 'data': 'digits', "
            "'grid': {'strategies': ['scratch'], 'backbones': ['simple_cnn'], 'seeds': [0]}, "
            f"'runs': [{{'run_id': '{run}', 'seed': 0}}]}})")
    subprocess.run([sys.executable, "-c", code, str(store.runs.root)], check=True, cwd=REPO)
    [listed] = store.list()
    assert listed["experiment_id"] == "exp-20990101-000099-abcdef" and listed["status"] == "finished"
