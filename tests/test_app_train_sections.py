"""AppTest: the Train page's collapsed sections (LR finder, experiment) run only when opened, and keep their state."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("TLCORE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TLCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TLCORE_THREADS", "1")
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("pages/1_Train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_closed_sections_send_no_widgets(train: AppTest) -> None:
    keys = {w.key for w in (*train.button, *train.multiselect, *train.number_input)}
    assert "start" in keys
    assert not keys & {"lr_find", "exp_strategies", "exp_backbones", "exp_seeds", "exp_plan"}
    assert [e.label for e in train.expander][-2:] == ["Learning-rate finder",
                                                       "Experiment: several strategies and backbones, over seeds"]


def test_experiment_picks_survive_closing_the_section(train: AppTest) -> None:
    train.session_state["exp_open"] = True
    train.run()
    assert train.multiselect(key="exp_strategies").value == ["feature_extraction"]  # follows the form's pick
    train.multiselect(key="exp_strategies").set_value(["scratch", "finetune"]).run()
    train.number_input(key="exp_seeds").set_value(5).run()
    train.session_state["exp_open"] = False
    train.run()
    assert not train.multiselect
    train.session_state["exp_open"] = True
    train.run()
    assert train.multiselect(key="exp_strategies").value == ["scratch", "finetune"]
    assert train.number_input(key="exp_seeds").value == 5
    assert not train.exception and not train.warning, [w.value for w in train.warning]


def test_the_lr_finder_runs_when_opened_and_its_suggestion_sets_the_lr(train: AppTest) -> None:
    train.selectbox(key="backbone").set_value("simple_cnn")
    train.selectbox(key="strategy").set_value("scratch")
    train.number_input(key="subset").set_value(10)
    train.selectbox(key="image_size").set_value(32)
    train.session_state["lr_find_open"] = True
    train.run()
    train.button(key="lr_find").click().run()
    assert not train.exception and not train.error, [e.value for e in (*train.exception, *train.error)]
    use = train.button(key="lr_use")
    suggested = float(use.label.split()[1])
    assert 1e-6 <= suggested <= 10 and train.session_state["lr_found"].suggested_lr > 0
    use.click().run()
    assert train.number_input(key="lr").value == pytest.approx(suggested)
