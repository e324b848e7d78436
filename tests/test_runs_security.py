"""Untrusted input: run ids from users, and checkpoints that carry a pickle payload."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from tlcore.models import weights
from tlcore.predict import get_predictor
from tlcore.runs import RunDamaged, RunStore, validate_run_id, write_json
from tlcore.training import features

RESNET18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


class Payload:
    """Unpickling this creates `marker`: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({self.marker!r}).touch()",)


def _malicious_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"fc.weight": torch.zeros(2, 2), "evil": Payload(marker)}, path)
    return path


def test_the_payload_really_runs_when_loaded_unsafely(tmp_path: Path) -> None:
    """Control: without weights_only the file does run code, so the tests below mean something."""
    marker = tmp_path / "control-marker"
    path = _malicious_checkpoint(tmp_path / "evil.pth", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("run_id", ["../x", "a/b", "", "/etc/passwd", "..", ".hidden", "a\\b", "a\nb", "x" * 200])
def test_bad_run_ids_are_refused(run_id: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid run id"):
        validate_run_id(run_id)
    store = RunStore(tmp_path)
    with pytest.raises(ValueError):
        store.path(run_id)
    with pytest.raises(ValueError):
        store.load(run_id)


def test_predictor_refuses_a_path_as_run_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid run id"):
        get_predictor(run_id="../runs/x", runs_dir=tmp_path)


def test_generated_run_ids_are_valid(tmp_path: Path) -> None:
    run_id = RunStore(tmp_path).new_run_id("efficientnet_lite0", "feature_extraction")
    assert validate_run_id(run_id) == run_id


def _fake_finished_run(runs: Path, run_id: str) -> None:
    store = RunStore(runs)
    store.create(run_id, {"backbone": "simple_cnn", "strategy": "scratch", "image_size": 32})
    store.write_classes(run_id, ["a", "b"])
    store.write_status(run_id, {"status": "finished"})
    write_json(runs / run_id / "metrics.json", [])


def test_pickle_posing_as_safetensors_is_refused_without_running(tmp_path: Path) -> None:
    runs, marker = tmp_path / "runs", tmp_path / "marker"
    _fake_finished_run(runs, "evil-run")
    _malicious_checkpoint(runs / "evil-run" / "model.safetensors", marker)

    # Not safetensors: refused as damaged, with the fix, before any unpickling.
    damaged = r"run evil-run's weights file is damaged or not safetensors \(.*\): train the run again"
    with pytest.raises(RunDamaged, match=damaged):
        RunStore(runs).load_weights("evil-run")
    with pytest.raises(RunDamaged, match=damaged):
        get_predictor(run_id="evil-run", runs_dir=runs, device="cpu")
    assert not marker.exists(), "the pickle payload ran"


def test_malicious_cached_torchvision_weights_are_refused_without_running(tmp_path: Path, tl_env) -> None:
    marker = tmp_path / "marker"
    _malicious_checkpoint(tl_env.checkpoints / weights.file_name(RESNET18_URL), marker)
    with pytest.raises(pickle.UnpicklingError):
        weights.fetch_state_dict(RESNET18_URL, "resnet18")
    assert not marker.exists(), "the pickle payload ran"


def test_malicious_feature_cache_entry_is_ignored(tmp_path: Path, tl_env) -> None:
    marker = tmp_path / "marker"
    _malicious_checkpoint(features.cache_path("0123456789abcdef01234567"), marker)
    assert features.load_cached("0123456789abcdef01234567") is None
    assert not marker.exists(), "the pickle payload ran"
