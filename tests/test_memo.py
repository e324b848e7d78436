"""Results computed once per run list (memo.py): reused for the same records, recomputed on any change."""

from __future__ import annotations

import time
from pathlib import Path

from fake_runs import age, fake_run, finish

from tlcore import memo, run_filters
from tlcore.runs import RunStore
from tlcore.views import ui


def listed(store: RunStore):
    # Folders written this second are reread on every listing (run_index.RACY_NS): age them, as
    # the runs of a long-used folder are.
    for folder in store.root.iterdir():
        age(folder)
    return store.list()


def test_the_same_records_reuse_the_result_and_a_copy_is_returned() -> None:
    calls = []

    @memo.per_record_list
    def count(records):
        calls.append(1)
        return {"n": [len(records)]}

    a, b = object(), object()
    first = count([a, b])
    first["n"].append(99)  # the caller changes its copy: the kept result stays as computed
    assert count([a, b]) == {"n": [2]} and len(calls) == 1
    assert count([a]) == {"n": [1]} and len(calls) == 2  # a different list of records
    assert count([b, a]) == {"n": [2]} and len(calls) == 3  # same records, another order
    assert count([a, object()]) == {"n": [2]} and len(calls) == 4  # an equal length, another record


def test_labels_follow_renames_new_runs_and_deletes(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    ids = [fake_run(store, i, lr=1e-3) for i in range(3)]
    labels = ui.run_labels(listed(store))
    assert len(set(labels.values())) == 3
    store.set_name(ids[0], "my best run")
    assert ui.run_labels(listed(store))[ids[0]] == "my best run"
    new = fake_run(store, 3, lr=1e-2)  # a setting the others do not share: it enters every label
    labels = ui.run_labels(listed(store))
    assert "lr 0.01" in labels[new] and "lr 0.001" in labels[ids[1]]
    store.delete(new)
    labels = ui.run_labels(listed(store))
    assert new not in labels and "lr" not in labels[ids[1]]


def test_a_running_run_reread_with_new_epochs_keeps_its_label_and_the_filters_see_its_end(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    for i in range(3):
        fake_run(store, i)
    live = fake_run(store, 3, "running", epochs=1)
    before = ui.run_labels(listed(store))
    assert "running" in run_filters.choices(store.list())["status"]
    finish(store, live, "finished", epochs=2)
    time.sleep(0.01)
    records = listed(store)
    assert ui.run_labels(records) == before
    assert run_filters.choices(records)["status"] == []  # every run finished now: nothing to filter by
