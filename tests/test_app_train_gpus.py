"""AppTest: the Train page offers "GPUs" only where more than one CUDA device is present (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from tlcore.training.jobs import JobManager

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGE = "pages/1_Train.py"


def train_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def submitted(tl_env, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """What Start training asks the job manager for (nothing trains)."""
    calls: list[dict] = []

    def submit(self, config, listener=None, run_id=None, processes=1):
        calls.append({"config": config, "processes": processes})
        return "20260101-000000-simple_cnn-scratch-000000"

    monkeypatch.setattr(JobManager, "submit", submit)
    return calls


@pytest.mark.parametrize("devices", [0, 1])
def test_one_device_or_none_offers_no_gpus_and_trains_in_the_app(devices: int, submitted: list[dict],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
    at = train_page()
    assert "gpus" not in {w.key for w in at.number_input}
    at.number_input(key="subset").set_value(5)
    at.button(key="start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [c["processes"] for c in submitted] == [1]


def test_two_devices_offer_gpus_and_a_run_over_both(submitted: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    at = train_page()
    gpus = at.number_input(key="gpus")
    assert (gpus.label, gpus.value, gpus.min, gpus.max) == ("GPUs", 1, 1, 2)
    at.number_input(key="subset").set_value(5)
    at.button(key="start").click().run()
    at.number_input(key="gpus").set_value(2)
    at.button(key="start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [c["processes"] for c in submitted] == [1, 2]  # default 1: the app's own thread, as before
    assert "over 2 GPUs" in at.success[0].value
