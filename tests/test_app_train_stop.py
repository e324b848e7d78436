"""AppTest: a run that another process trains (a terminal, torchrun, this app before a restart) can be stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_runs import fake_run, finish
from streamlit.testing.v1 import AppTest

from tlcore.runs import CANCEL_REQUEST, RunStore

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunStore:
    monkeypatch.setenv("TLCORE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TLCORE_CACHE", str(tmp_path / "cache"))
    return RunStore(tmp_path / "runs")


def test_a_run_of_another_process_has_stop_not_cancel(store: RunStore) -> None:
    elsewhere = fake_run(store, 1, state="running")  # its owner lives, but no manager of this app trains it
    ended = fake_run(store, 2)
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/1_Train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    keys = {b.key for b in at.button}
    assert f"stop_{elsewhere}" in keys and f"cancel_{elsewhere}" not in keys
    assert f"stop_{ended}" not in keys  # an ended run has nothing to stop
    at.button(key=f"stop_{elsewhere}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert (store.path(elsewhere) / CANCEL_REQUEST).is_file()
    assert any("Asked its process to stop" in c.value for c in at.caption)
    assert f"stop_{elsewhere}" not in {b.key for b in at.button}  # the note took the button's place
    at.run()
    assert f"stop_{elsewhere}" not in {b.key for b in at.button}  # asked once: the caption stays instead
    assert any("Asked its process to stop" in c.value for c in at.caption)


def test_stop_on_a_run_that_ended_meanwhile_asks_nothing(store: RunStore) -> None:
    rid = fake_run(store, 1, state="running")
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/1_Train.py").run()
    finish(store, rid)  # it ends before the click
    at.button(key=f"stop_{rid}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    # The page reads the run again first: it shows it ended, with nothing to stop and nothing asked.
    assert f"stop_{rid}" not in {b.key for b in at.button}
    assert ":green-badge[finished]" in " ".join(m.value for m in at.markdown)
    assert not (store.path(rid) / CANCEL_REQUEST).exists()
