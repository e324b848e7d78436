"""Runs last (the `after_suite` marker, whatever the file order): after every fault the suite
injected, the engine still trains and predicts in the same process."""

from __future__ import annotations

import pytest

from tlcore.predict import get_predictor
from tlcore.training.config import TrainConfig
from tlcore.training.jobs import get_manager


@pytest.mark.after_suite
def test_a_fresh_digits_run_still_trains_and_predicts_in_the_same_process(request, tl_env, png_bytes) -> None:
    assert request.session.items[-1] is request.node, "the after-suite check did not run last"
    manager = get_manager(tl_env.runs)
    run_id = manager.submit(TrainConfig(data="digits", subset=5, image_size=64, epochs=2, device="cpu"))
    assert manager.wait(run_id, 120)
    snap = manager.snapshot(run_id)
    assert snap["status"] == "finished", snap.get("message")
    assert len(snap["metrics"]) == 2
    result = get_predictor(run_id=run_id, runs_dir=tl_env.runs).predict([png_bytes("cat")], k=10)[0]
    assert result.error is None
    assert {p.label for p in result.predictions} == {str(i) for i in range(10)}
    assert abs(sum(p.prob for p in result.predictions) - 1) < 1e-4
