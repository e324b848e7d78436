"""AppTest tests of the Train page: defaults, a real short run to the end, cancel, and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from vega_data import layer

from tlcore.training.config import TrainConfig
from tlcore.training.jobs import get_manager

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGE = "pages/1_Train.py"


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared by this module's tests: the second run on the same data skips the backbone.
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def runs_dir(tmp_path: Path, feature_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TLCORE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TLCORE_CACHE", str(feature_cache))
    monkeypatch.delenv("TLCORE_DATA", raising=False)
    return tmp_path / "runs"


def train_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def wait_all(runs_dir: Path) -> None:
    manager = get_manager(runs_dir)
    for run_id in manager.active():
        assert manager.wait(run_id, timeout=120), f"run {run_id} did not end"


def badges(at: AppTest) -> str:
    return " ".join(m.value for m in at.markdown)


def test_widgets_exist_with_their_defaults(runs_dir: Path) -> None:
    at, d = train_page(), TrainConfig()
    assert at.selectbox(key="backbone").value == d.backbone == "efficientnet_lite0"
    assert "offline" in at.selectbox(key="backbone").format_func("efficientnet_lite0")
    assert at.radio(key="data_source").value == "built-in"
    assert at.selectbox(key="dataset").value == "digits"
    assert at.selectbox(key="strategy").value == "feature_extraction"
    assert "only the new head" in " ".join(c.value for c in at.caption)  # the strategy's one-line summary
    assert (at.number_input(key="epochs").value, at.selectbox(key="batch_size").value) == (d.epochs, d.batch_size)
    assert at.number_input(key="lr").value == pytest.approx(d.lr)
    assert [at.selectbox(key=k).value for k in ("optimizer", "schedule", "head", "augment")] == [
        d.optimizer, d.schedule, d.head, d.augment]
    assert at.selectbox(key="image_size").value is None
    assert (at.number_input(key="seed").value, at.number_input(key="subset").value) == (d.seed, None)
    assert at.button(key="start").label == "Start training"
    assert "No runs yet" in at.info[0].value
    assert not at.get("vega_lite_chart")


def test_a_short_run_grows_curves_and_finishes(runs_dir: Path) -> None:
    at = train_page()
    at.selectbox(key="image_size").set_value(64)
    at.number_input(key="subset").set_value(5)
    at.number_input(key="epochs").set_value(2)
    at.button(key="start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Queued run" in at.success[0].value
    (record,) = get_manager(runs_dir).list_runs()
    assert record.config["image_size"] == 64 and record.config["subset"] == 5 and record.config["epochs"] == 2
    wait_all(runs_dir)

    at.run()
    assert not at.exception
    assert ":green-badge[finished]" in badges(at)
    (chart,) = at.get("vega_lite_chart")
    rows = layer(chart, "line")[1]
    val_acc = rows[(rows["metric"] == "acc") & (rows["series"] == "val")]
    assert list(val_acc["epoch"]) == [1, 2]  # one point per finished epoch
    assert "best val acc" in " ".join(c.value for c in at.caption)

    # A reload (a new session) finds the same run: it comes from the manager and disk. It did not
    # watch the run train, so the curves wait for the card's toggle (issue 13).
    again = train_page()
    assert ":green-badge[finished]" in badges(again) and not again.get("vega_lite_chart")
    again.toggle(key=f"show_curves_{record.run_id}").set_value(True).run()
    assert len(again.get("vega_lite_chart")) == 1


def test_cancel_a_running_run(runs_dir: Path) -> None:
    at = train_page()
    at.selectbox(key="backbone").set_value("simple_cnn")
    at.selectbox(key="strategy").set_value("scratch")
    at.number_input(key="subset").set_value(5)
    at.number_input(key="epochs").set_value(1000)  # cannot end on its own during the test
    at.button(key="start").click().run()
    (run_id,) = get_manager(runs_dir).active()
    assert at.get("progress"), "an active run shows a progress bar"
    at.button(key=f"cancel_{run_id}").click().run()
    wait_all(runs_dir)
    at.run()
    assert ":orange-badge[cancelled]" in badges(at)
    assert "cancelled" in at.warning[0].value


def test_a_failed_run_shows_its_message_and_the_page_keeps_working(runs_dir: Path) -> None:
    manager = get_manager(runs_dir)
    manager.submit(TrainConfig(backbone="simple_cnn", data=str(runs_dir.parent / "gone"), epochs=1))
    wait_all(runs_dir)
    at = train_page()
    assert ":red-badge[failed]" in badges(at)
    assert "gone" in at.error[0].value


def test_bad_inputs_show_an_error_not_a_traceback(runs_dir: Path) -> None:
    at = train_page()
    at.radio(key="data_source").set_value("folder on this machine").run()
    at.text_input(key="data_folder").input(str(runs_dir.parent / "no-such-folder"))
    at.button(key="start").click().run()
    assert not at.exception
    assert "does not exist" in at.error[0].value
    assert not get_manager(runs_dir).list_runs()

    at.radio(key="data_source").set_value("upload a .zip").run()
    at.button(key="start").click().run()
    assert not at.exception and "upload a .zip" in at.error[0].value


@pytest.mark.parametrize(("key", "value", "line"), [
    ("epochs", 100000, "Cannot start: Epochs must be between 1 and 1000, got 100000"),
    ("lr", -1.0, "Cannot start: Learning rate must be greater than 0"),
    ("subset", 0, "Cannot start: Images per class must be between 1 and 1000000"),
    ("seed", -3, "Cannot start: Seed must be between 0 and"),
])
def test_a_number_out_of_range_is_refused_by_its_label(runs_dir: Path, key: str, value, line: str) -> None:
    """A bounded number field keeps its last value in range while showing the typed one (seen in
    Chromium: 100000 epochs shown, a run of 2 queued); unbounded, Start sees what the user typed."""
    at = train_page()
    field = at.number_input(key=key)
    assert (field.min, field.max) == (None, None)
    field.set_value(value)
    at.button(key="start").click().run()
    assert not at.exception
    assert [e.value for e in at.error] and at.error[0].value.startswith(line), [e.value for e in at.error]
    assert not get_manager(runs_dir).list_runs()


def test_the_queued_message_stays_when_the_run_ends_before_the_poll(runs_dir: Path, monkeypatch) -> None:
    """A tiny run can end between the page's run list and the poll's first look: the page must not
    rerun then (that dropped the "Queued run" message), the next poll redraws it."""
    from tlcore.runs import RunStore

    at = train_page()
    at.selectbox(key="image_size").set_value(32)
    at.number_input(key="subset").set_value(5)
    at.number_input(key="epochs").set_value(1)
    real_active, looks = RunStore.active, []

    def ended_at_once(store):  # the poll's first look finds nothing active any more
        looks.append(1)
        return [] if len(looks) == 1 else real_active(store)

    monkeypatch.setattr(RunStore, "active", ended_at_once)
    at.button(key="start").click().run()
    assert looks and not at.exception
    assert "Queued run" in at.success[0].value
    wait_all(runs_dir)
