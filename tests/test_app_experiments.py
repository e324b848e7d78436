"""AppTest tests of experiments in the app: plan and start on Train, bands and verdict on Compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tlcore.experiments import ExperimentStore, Grid, start_experiment
from tlcore.training.jobs import get_manager

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TLCORE_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def page(path: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(path).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def wait_experiments(runs_dir: Path) -> list[dict]:
    manager = get_manager(runs_dir.resolve())
    records = ExperimentStore(runs_dir).list()
    for record in records:
        for run in record["runs"]:
            assert manager.wait(run["run_id"], 300)
    return ExperimentStore(runs_dir).list()


def test_train_page_plans_then_starts_an_experiment(runs_dir: Path) -> None:
    at = page("pages/1_Train.py")
    at.selectbox(key="backbone").set_value("simple_cnn")
    at.number_input(key="subset").set_value(5)
    at.selectbox(key="image_size").set_value(32)
    at.number_input(key="epochs").set_value(1)
    at.session_state["exp_open"] = True  # the section runs only when opened
    at.run()
    at.multiselect(key="exp_strategies").set_value(["scratch", "finetune"])
    at.number_input(key="exp_seeds").set_value(2)
    at.button(key="exp_plan").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("4 runs, about" in i.value for i in at.info), [i.value for i in at.info]
    assert not ExperimentStore(runs_dir).list(), "planning alone must not queue anything"
    at.button(key="exp_start").click().run()
    assert any("Queued experiment exp-" in s.value for s in at.success)
    [record] = wait_experiments(runs_dir)
    assert record["status"] == "finished" and len(record["runs"]) == 4
    assert {(r["strategy"], r["seed"]) for r in record["runs"]} == {
        ("scratch", 0), ("scratch", 1), ("finetune", 0), ("finetune", 1)}


def test_compare_page_shows_bands_table_and_verdict(runs_dir: Path, tiny_config) -> None:
    manager = get_manager(runs_dir.resolve())
    start_experiment(manager, tiny_config(epochs=2), Grid(["scratch", "finetune"], ["simple_cnn"], [0, 1]))
    [record] = wait_experiments(runs_dir)
    at = page("pages/2_Compare.py")
    at.radio(key="compare_what").set_value("An experiment").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="experiment").value == record["experiment_id"]
    verdict = [m.value for m in at.markdown if m.value.startswith("**Verdict:**")]
    assert verdict and "validation images" in verdict[0]
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(charts) == 2
    bands = [t for t in charts[0]["data"] if t.get("fill") == "toself"]
    means = [t for t in charts[0]["data"] if "mean of 2" in t.get("name", "")]
    assert len(bands) == 2 and len(means) == 2
    summary, per_run = (d.value for d in at.dataframe)  # AppTest does not keep dataframe keys
    assert sorted(summary["cell"]) == ["simple_cnn/finetune", "simple_cnn/scratch"]
    assert set(summary["n"]) == {2} and sorted(summary["rank"]) == [1, 2]
    assert len(per_run) == 4 and set(per_run["seed"]) == {0, 1}
