"""Pretrained weights offline: a fast failure that says what to do, and the hub cache used as is."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import pytest
import torch
import torchvision

from tlcore.models import backbones, weights
from tlcore.models.weights import WeightsUnavailable

RESNET18_FILE = "resnet18-f37072fd.pth"
RESNET18_URL = f"https://download.pytorch.org/models/{RESNET18_FILE}"


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "host_reachable", lambda *a, **k: False)

    def no_download(*a, **k):
        raise AssertionError("tried to download")

    monkeypatch.setattr(weights, "download", no_download)


def test_url_and_file_name_are_torchvisions() -> None:
    assert backbones.weights_source(backbones.get_backbone("resnet18")) == RESNET18_URL
    assert weights.file_name(RESNET18_URL) == RESNET18_FILE


def test_offline_build_fails_fast_naming_file_folder_and_alternative(monkeypatch, tl_env) -> None:
    _no_network(monkeypatch)
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailable) as exc:
        backbones.build_model("resnet18", 3)
    assert time.perf_counter() - t0 < 5
    message = str(exc.value)
    assert RESNET18_FILE in message
    assert str(tl_env.checkpoints) in message
    assert "efficientnet_lite0" in message
    assert "\n" not in message


def test_tlcore_offline_never_opens_a_connection(monkeypatch) -> None:
    calls = []

    def fake_connection(address, timeout=None):
        calls.append(address)
        return contextlib.nullcontext()  # "connected"

    monkeypatch.setattr(weights.socket, "create_connection", fake_connection)
    monkeypatch.setenv("TLCORE_OFFLINE", "1")
    assert weights.host_reachable(RESNET18_URL) is False and calls == []
    monkeypatch.setenv("TLCORE_OFFLINE", "0")  # "0" means online: the probe runs (control)
    assert weights.host_reachable(RESNET18_URL) is True and calls == [("download.pytorch.org", 443)]


@pytest.mark.slow
def test_cli_train_offline_exits_1_with_the_fix(tmp_path, tl_env) -> None:
    # Forced offline (not skipped where the host answers): the failure path runs everywhere.
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "tlcore", "train", "--backbone", "resnet18", "--data", "digits",
         "--epochs", "1", "--runs-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=60, env={**os.environ, "TLCORE_OFFLINE": "1"},
    )
    assert time.perf_counter() - t0 < 30
    assert proc.returncode == 1, proc.stderr
    assert "(no network)" in proc.stderr
    assert RESNET18_FILE in proc.stderr and "efficientnet_lite0" in proc.stderr
    assert str(tl_env.checkpoints) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cached_weights_load_without_network(monkeypatch, tl_env) -> None:
    _no_network(monkeypatch)
    reference = torchvision.models.resnet18(weights=None)
    tl_env.checkpoints.mkdir(parents=True)
    torch.save(reference.state_dict(), tl_env.checkpoints / RESNET18_FILE)

    assert backbones.weights_available_offline(backbones.get_backbone("resnet18"))
    model = backbones.build_model("resnet18", 3)
    expected = reference.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, expected[key]), key
    assert model.fc.out_features == 3


def test_mismatched_checkpoint_is_refused(monkeypatch, tl_env) -> None:
    _no_network(monkeypatch)
    tl_env.checkpoints.mkdir(parents=True)
    state = torchvision.models.resnet18(weights=None).state_dict()
    del state["layer4.1.bn2.weight"]
    torch.save(state, tl_env.checkpoints / RESNET18_FILE)
    with pytest.raises(RuntimeError, match="does not match"):
        backbones.build_model("resnet18", 3)
