"""The warm predictor cache (least recently used out, new weights in) and runs with an MLP head."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from tlcore import predict
from tlcore.models.backbones import build_model, get_backbone, get_module
from tlcore.predict import get_predictor
from tlcore.runs import RunStore, read_json
from tlcore.training.jobs import JobManager


def _get(run_id: str, runs: Path):
    return get_predictor(run_id=run_id, runs_dir=runs, device="cpu")


def test_the_least_recently_used_predictor_is_evicted(tmp_path: Path, make_finished_run, monkeypatch) -> None:
    monkeypatch.setattr(predict, "CACHE_SIZE", 2)
    runs = tmp_path / "runs"
    a, b, c = (make_finished_run(runs) for _ in range(3))
    first_a, first_b = _get(a, runs), _get(b, runs)
    assert _get(a, runs) is first_a  # a is now the most recently used; b the least
    first_c = _get(c, runs)  # over the limit: b goes
    assert len(predict._CACHE) == 2
    assert _get(a, runs) is first_a and _get(c, runs) is first_c
    assert _get(b, runs) is not first_b, "the least recently used predictor was kept"
    assert _get(c, runs) is first_c and _get(a, runs) is not first_a  # reloading b evicted a, the oldest then


def test_new_weights_for_a_run_load_a_new_predictor(tmp_path: Path, make_finished_run) -> None:
    runs = tmp_path / "runs"
    run_id = make_finished_run(runs)
    old = _get(run_id, runs)
    assert _get(run_id, runs) is old
    store = RunStore(runs)
    state = {k: v + 1 if v.is_floating_point() else v for k, v in store.load_weights(run_id).items()}
    store.save_weights(run_id, state)
    weights = store.path(run_id) / "model.safetensors"
    later = weights.stat().st_mtime + 5  # a coarse file-system clock must still see a change
    os.utime(weights, (later, later))
    new = _get(run_id, runs)
    assert new is not old
    for key, value in new.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not torch.equal(old.model.state_dict()["fc.weight"], new.model.state_dict()["fc.weight"])


def _linear_widths(module: nn.Module) -> list[int]:
    return [m.out_features for m in module.modules() if isinstance(m, nn.Linear)]


def test_a_run_with_an_mlp_head_predicts_with_the_same_head(tmp_path: Path, tiny_config, png_bytes) -> None:
    runs = tmp_path / "runs"
    manager = JobManager(runs)
    run_id = manager.submit(tiny_config(head="mlp", hidden=(24, 12), epochs=1))
    assert manager.wait(run_id, timeout=60)
    assert manager.snapshot(run_id)["status"] == "finished", manager.snapshot(run_id).get("message")
    assert read_json(runs / run_id / "config.json")["hidden"] == [24, 12]

    predictor = _get(run_id, runs)
    spec = get_backbone("simple_cnn")
    assert _linear_widths(get_module(predictor.model, spec.head)) == [24, 12, 10]
    saved = RunStore(runs).load_weights(run_id)
    for key, value in predictor.model.state_dict().items():
        assert torch.equal(value, saved[key]), key

    # The same function as the trained weights in a model built by hand with that head.
    reference = build_model("simple_cnn", 10, pretrained=False, head="mlp", hidden=(24, 12)).eval()
    reference.load_state_dict(saved)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(predictor.model(x), reference(x), atol=1e-6)
    [result] = predictor.predict([png_bytes("coffee")], k=10)
    assert result.error is None and len(result.predictions) == 10
