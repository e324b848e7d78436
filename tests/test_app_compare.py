"""AppTest tests of the Compare page over runs made beforehand by the job manager."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from vega_data import layer

from tlcore.training.config import TrainConfig
from tlcore.training.jobs import get_manager

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGE = "pages/2_Compare.py"


@pytest.fixture(scope="module")
def made_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    """Two finished tiny runs (simple_cnn: seconds on a CPU) and one that failed, in one runs folder."""
    root = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLCORE_CACHE", str(root / "cache"))
        mp.delenv("TLCORE_DATA", raising=False)
        manager = get_manager(root / "runs")
        base = {"backbone": "simple_cnn", "data": "digits", "subset": 5, "epochs": 2, "image_size": 32}
        ids = [manager.submit(TrainConfig(**base, strategy=s)) for s in ("scratch", "finetune")]
        ids.append(manager.submit(TrainConfig(**{**base, "data": str(root / "missing")}, strategy="scratch")))
        for run_id in ids:
            assert manager.wait(run_id, timeout=120)
        assert [manager.snapshot(i)["status"] for i in ids] == ["finished", "finished", "failed"]
        yield root / "runs", ids


@pytest.fixture
def runs(made_runs: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The made runs' ids, with TLCORE_RUNS pointing at their folder for this test."""
    monkeypatch.setenv("TLCORE_RUNS", str(made_runs[0]))
    return made_runs[1]


def compare_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def traces(chart) -> list[str]:
    """The curves a chart draws, in order: a run's name, "<name> (train)" for its train curve."""
    rows = layer(chart, "line")[1]
    pairs = rows[["run", "split"]].drop_duplicates().itertuples(index=False, name=None)
    return [run if split == "val" else f"{run} ({split})" for run, split in pairs]


def y_domain(chart) -> list[float]:
    return layer(chart, "line")[0]["encoding"]["y"]["scale"]["domain"]


FT, SC = "simple_cnn + finetune · digits", "simple_cnn + scratch · digits"  # the failed run's data differs


def test_without_runs_it_says_where_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLCORE_RUNS", str(tmp_path / "runs"))
    at = compare_page()
    assert "No runs yet" in at.info[0].value
    assert not at.multiselect


def test_finished_runs_are_compared_by_default(runs: list[str]) -> None:
    at = compare_page()
    finished = set(runs[:2])
    assert set(at.multiselect(key="runs").value) == finished
    assert len(at.multiselect(key="runs").options) == 3
    acc, loss = at.get("vega_lite_chart")
    assert traces(acc) == traces(loss) == [FT, SC]  # newest first
    for chart in (acc, loss):
        rows = layer(chart, "line")[1]
        for run in (FT, SC):
            assert list(rows[rows["run"] == run]["epoch"]) == [1, 2]

    summary, epochs = at.dataframe
    assert list(summary.value["strategy"]) == ["finetune", "scratch"]
    assert list(summary.value["dataset"]) == ["digits", "digits"]
    assert summary.value["best val acc"].str.fullmatch(r"\d+\.\d%").all()  # shown as text: 85.0%
    assert list(summary.value["image size"]) == ["32", "32"] and list(summary.value["images per class"]) == ["5", "5"]
    assert list(epochs.value.index) == [1, 2]
    assert list(epochs.value.columns) == [f"{metric} · {run}" for metric in (
        "val acc", "val loss", "train acc", "train loss") for run in (FT, SC)]
    assert [b.key for b in at.get("download_button")] == ["download_summary", "download_epochs"]


def test_train_curves_toggle(runs: list[str]) -> None:
    at = compare_page()
    at.toggle(key="show_train").set_value(True).run()
    acc, _ = at.get("vega_lite_chart")
    assert traces(acc) == [FT, f"{FT} (train)", SC, f"{SC} (train)"]
    assert layer(acc, "line")[0]["encoding"]["color"]["scale"]["domain"] == [FT, SC]  # each run listed once
    assert "solid: validation · dashed: train" in json.loads(acc.proto.spec)["title"]["subtitle"]  # the styles' key


def test_accuracy_axis_fits_the_runs_with_a_toggle_for_0_to_100(runs: list[str]) -> None:
    at = compare_page()
    fitted = y_domain(at.get("vega_lite_chart")[0])
    at.toggle(key="acc_full").set_value(True).run()
    full = y_domain(at.get("vega_lite_chart")[0])
    assert full == [0, 1.02] and fitted != full


def test_a_failed_run_can_be_chosen_and_shows_its_message(runs: list[str]) -> None:
    at = compare_page()
    at.multiselect(key="runs").set_value([runs[2]]).run()
    assert not at.exception
    assert "failed" in at.error[0].value and "missing" in at.error[0].value
    assert "None of these runs has finished an epoch" in at.warning[0].value


def test_choosing_no_run_asks_for_one(runs: list[str]) -> None:
    at = compare_page()
    at.multiselect(key="runs").set_value([]).run()
    assert not at.exception and "Pick one or more runs" in at.info[0].value


def test_cancelled_and_interrupted_runs_show_their_epochs_so_far(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 made_runs: tuple[Path, list[str]]) -> None:
    """A run cancelled mid-way and one whose server died both keep their epochs on Compare."""
    import shutil

    from tlcore.runs import read_json, write_json

    runs_dir = tmp_path / "runs"
    finished = made_runs[1][0]
    for new_id, state in (("20260101-000000-cancelled-run", "cancelled"), ("20260101-000001-dead-run", "running")):
        shutil.copytree(made_runs[0] / finished, runs_dir / new_id)
        status = read_json(runs_dir / new_id / "status.json")
        # "running" with an owner process that no longer exists: what a killed server leaves.
        status.update(status=state, pid=2**22 + 12345, token="gone")
        status.pop("trainable_params")  # a value missing from the summary
        write_json(runs_dir / new_id / "status.json", status)
        write_json(runs_dir / new_id / "metrics.json", read_json(runs_dir / new_id / "metrics.json")[:1])
    monkeypatch.setenv("TLCORE_RUNS", str(runs_dir))
    at = compare_page()
    at.multiselect(key="runs").set_value(["20260101-000000-cancelled-run", "20260101-000001-dead-run"]).run()
    assert not at.exception, [e.value for e in at.exception]
    summary, epochs = at.dataframe
    assert sorted(summary.value["status"]) == ["cancelled", "interrupted"]
    assert list(epochs.value.index) == [1]  # the epoch each finished before it stopped
    # A blank where a value is missing (these runs have no parameter count saved), not "None".
    assert list(summary.value["trainable params"]) == ["", ""]
