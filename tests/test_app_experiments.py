"""AppTest tests of experiments in the app: plan and start on Train, bands and verdict on Compare."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from vega_data import layer

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
    acc, loss = at.get("vega_lite_chart")
    cells = {"simple_cnn/scratch (mean of 2)", "simple_cnn/finetune (mean of 2)"}
    for chart, metric in ((acc, "accuracy"), (loss, "loss")):
        assert json.loads(chart.proto.spec)["title"]["text"] == f"validation {metric}: mean ± std over seeds"
        seeds, band, means = layer(chart, "line", 0)[1], layer(chart, "area")[1], layer(chart, "line", 1)[1]
        assert set(band["series"]) == set(means["series"]) == set(seeds["series"]) == cells
        assert len(set(zip(seeds["cell"], seeds["seed"], strict=True))) == 4 and set(means["epoch"]) == {1, 2}
        # The thick line is the seeds' mean, the band its ± sample std.
        by_epoch = seeds.groupby(["cell", "epoch"])["value"]
        means = means.set_index(["cell", "epoch"]).sort_index()
        assert np.allclose(means["mean"], by_epoch.mean().sort_index())
        assert np.allclose(band.set_index(["cell", "epoch"]).sort_index()["high"], (by_epoch.mean() + by_epoch.std()).sort_index())
    summary, per_run = (d.value for d in at.dataframe)  # AppTest does not keep dataframe keys
    assert sorted(summary["cell"]) == ["simple_cnn/finetune", "simple_cnn/scratch"]
    assert set(summary["n"]) == {2} and sorted(summary["rank"]) == [1, 2]
    assert len(per_run) == 4 and set(per_run["seed"]) == {0, 1}
