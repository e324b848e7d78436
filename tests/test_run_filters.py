"""Finding runs among many: filters and search, Compare's default pick (AppTest), `runs` filters and --limit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fake_runs import fake_run
from streamlit.testing.v1 import AppTest

from tlcore import cli, run_filters
from tlcore.experiments import ExperimentStore
from tlcore.runs import RunStore

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


def mixed_runs(store: RunStore) -> list[str]:
    """Eight runs: two strategies, two datasets, a failed one, a running one, a named one."""
    ids = [fake_run(store, i, strategy="scratch" if i % 2 else "finetune", data="digits" if i < 4 else "mnist")
           for i in range(6)]
    ids.append(fake_run(store, 6, "failed", epochs=0, strategy="finetune", data="mnist"))
    ids.append(fake_run(store, 7, "running", strategy="finetune", data="mnist"))
    store.set_name(ids[2], "Baseline for the paper")
    return ids


def test_filters_and_search_keep_what_they_say(store: RunStore) -> None:
    ids = mixed_runs(store)
    records = store.list()
    keep = lambda **kw: [r.run_id for r in run_filters.apply(records, run_filters.RunFilter(**kw))]  # noqa: E731
    assert keep() == ids[::-1]
    assert keep(strategy=["scratch"]) == [ids[5], ids[3], ids[1]]
    assert keep(data=["mnist"], strategy=["finetune"]) == [ids[7], ids[6], ids[4]]
    assert keep(status=["failed", "running"]) == [ids[7], ids[6]]
    assert keep(name=["Baseline for the paper"]) == [ids[2]]
    assert keep(text="baseline PAPER") == [ids[2]]  # every word, any case
    assert keep(text=ids[3][-6:]) == [ids[3]]  # part of the id
    assert keep(text="nothing like this") == []
    assert not run_filters.RunFilter().active and run_filters.RunFilter(text=" x ").active
    values = run_filters.choices(records)
    assert values["status"][0] == "finished" and set(values["status"]) == {"finished", "failed", "running"}
    assert values["name"] == ["Baseline for the paper"] and values["experiment"] == []
    # A value every run has would keep them all: no filter is offered for it (Compare, Predict).
    assert run_filters.choices(records[:1]) == {field: [] for field in run_filters.FIELDS}


def test_compare_opens_on_the_newest_runs_or_a_newer_experiment(store: RunStore) -> None:
    ids = [fake_run(store, i) for i in range(40)]
    records = store.list()
    picked, why = run_filters.default_compare(records)
    assert picked == ids[::-1][:run_filters.DEFAULT_RECENT] and "newest" in why
    exp_runs = ids[10:30]  # 20 runs: more than can be drawn at once
    experiment = {"experiment_id": "exp-1", "created": time.time(), "runs": [{"run_id": r} for r in exp_runs]}
    picked, why = run_filters.default_compare(records, [experiment])
    assert picked == exp_runs[::-1][:run_filters.MAX_COMPARE] and "exp-1" in why
    older = {**experiment, "created": 0}  # runs made after it are what the user did last
    assert run_filters.default_compare(records, [older])[0] == ids[::-1][:run_filters.DEFAULT_RECENT]


def test_compare_opens_on_the_newest_runs_of_one_dataset(store: RunStore) -> None:
    """Accuracies of 10-class digits and of a 2-class folder on one axis compare nothing."""
    ids = [fake_run(store, i, data="digits" if i % 2 else "/photos/ants_bees") for i in range(12)]
    picked, why = run_filters.default_compare(store.list())
    assert picked == [ids[i] for i in (11, 9, 7, 5, 3)][:run_filters.DEFAULT_RECENT]
    assert f"the {len(picked)} newest digits runs" in why


def test_pages_and_picker_options() -> None:
    assert run_filters.page_of(list(range(25)), 3, 10) == ([20, 21, 22, 23, 24], 3)
    assert run_filters.page_of(list(range(25)), 9, 10)[0] == [20, 21, 22, 23, 24]  # clamped
    assert run_filters.page_of([], 1, 10) == ([], 1)
    note = run_filters.picker_note(500, 2000, run_filters.MAX_COMPARE, "the 5 newest runs with curves")
    assert "500 of 2000 runs match" in note and f"at most {run_filters.MAX_COMPARE} runs" in note
    assert run_filters.picker_note(1, 1) == "1 run" and run_filters.picker_note(3, 3) == "3 runs"
    assert "2 of the picked runs do not match the filters (still drawn" in run_filters.picker_note(0, 12, 5, outside=2)
    assert "picked" not in run_filters.picker_note(3, 12, 3)
    assert "search or filter" in note


def test_compare_page_opens_on_a_few_runs_of_many(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [fake_run(store, i, strategy=("scratch", "finetune", "partial")[i % 3]) for i in range(230)]
    monkeypatch.setenv("TLCORE_RUNS", str(store.root))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/2_Compare.py").run()
    assert not at.exception
    chosen = at.multiselect(key="runs")
    assert chosen.value == ids[::-1][:run_filters.DEFAULT_RECENT]
    assert len(chosen.options) == run_filters.MAX_OPTIONS  # the newest matches, not all 230
    assert any("230 runs" in c.value and "opened on" in c.value for c in at.caption)
    at.multiselect(key="compare_strategy").set_value(["partial"]).run()
    assert not at.exception
    assert len(at.multiselect(key="runs").options) == 76 + 4  # the partial runs, and the picks kept
    at.multiselect(key="compare_strategy").set_value([]).run()
    at.text_input(key="compare_text").input(ids[0][-6:]).run()  # the oldest run, by its id
    options = at.multiselect(key="runs").options
    assert len(options) == 6 and any("seed 0 ·" in o for o in options)
    assert at.multiselect(key="runs").value == ids[::-1][:run_filters.DEFAULT_RECENT]


def test_compare_page_opens_on_the_latest_experiment(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [fake_run(store, i, experiment_id="exp-20990101-000000-abcdef" if 5 <= i < 9 else None)
           for i in range(9)]
    ExperimentStore(store.root).save({"format": 1, "experiment_id": "exp-20990101-000000-abcdef",
                                      "created": time.time(), "finished": time.time(), "data": "digits",
                                      "grid": {"strategies": ["scratch"], "backbones": ["simple_cnn"],
                                               "seeds": [0, 1, 2, 3]},
                                      "runs": [{"run_id": r, "seed": i} for i, r in enumerate(ids[5:9])]})
    monkeypatch.setenv("TLCORE_RUNS", str(store.root))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/2_Compare.py").run()
    assert not at.exception
    assert at.multiselect(key="runs").value == ids[5:9][::-1]


def runs_cli(store: RunStore, capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["runs", "--runs-dir", str(store.root), *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_runs_command_filters_and_limits(store: RunStore, capsys) -> None:
    ids = mixed_runs(store)
    ids += [fake_run(store, i) for i in range(8, 30)]
    code, out = runs_cli(store, capsys)
    assert code == 0 and len([line for line in out.splitlines() if line.startswith("20")]) == cli.RUNS_SCREEN
    assert f"{len(ids) - cli.RUNS_SCREEN} more: use --limit {len(ids)}" in out
    code, out = runs_cli(store, capsys, "--limit", "3")
    assert [line.split()[0] for line in out.splitlines()[:3]] == ids[::-1][:3] and "27 more" in out
    code, out = runs_cli(store, capsys, "--json")  # the whole list, as before
    assert code == 0 and [row["run_id"] for row in json.loads(out)] == ids[::-1]
    code, out = runs_cli(store, capsys, "--json", "--status", "failed,running")
    assert [row["run_id"] for row in json.loads(out)] == [ids[7], ids[6]]
    code, out = runs_cli(store, capsys, "--json", "--data", "mnist", "--strategy", "scratch", "--backbone", "simple_cnn")
    assert [row["run_id"] for row in json.loads(out)] == [ids[5]]  # 4 and 5 are mnist; 5 is scratch
    code, out = runs_cli(store, capsys, "--experiment", "exp-none")
    assert code == 0 and "no runs match these filters" in out
    for bad in (["--status", "done"], ["--strategy", "magic"], ["--backbone", "resnet9000"], ["--limit", "-1"]):
        code, out = runs_cli(store, capsys, *bad)
        assert code == 2 and "error" in out and len(out.strip().splitlines()) == 1, (bad, out)
    assert "finished" in runs_cli(store, capsys, "--status", "done")[1]  # the message lists the valid ones


def test_train_page_lists_active_runs_then_pages_through_the_rest(store: RunStore,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [fake_run(store, i) for i in range(34)]
    running = fake_run(store, 40, "running", created=0)  # the oldest of all, still listed first
    monkeypatch.setenv("TLCORE_RUNS", str(store.root))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/1_Train.py").run()
    assert not at.exception

    def cards() -> list[str]:
        return [m.value for m in at.markdown if "-badge[" in m.value]

    assert len(cards()) == 1 + 6 and "running" in cards()[0]
    assert any("28 older or failed runs not shown" in c.value for c in at.caption)
    at.toggle(key="show_all").set_value(True).run()
    assert len(cards()) == 1 + run_filters.CARDS_PER_PAGE
    at.number_input(key="runs_page").set_value(4).run()  # 34 ended runs: the last page has 4
    assert not at.exception and len(cards()) == 1 + 4
    assert at.number_input(key="runs_page").label == "Page (of 4)"
    assert running not in ids
