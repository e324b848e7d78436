"""The mixed-precision and channels_last code paths, exercised on the CPU.

CUDA gets bf16 autocast and channels_last (device.py); torch's CPU autocast also runs bf16, so
pretending the CPU is such a device runs the same code paths in training (full forward and
feature cache) and in prediction, without a GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tlcore import device as device_module
from tlcore.predict import get_predictor


@pytest.fixture
def cpu_like_a_gpu(monkeypatch):
    """amp_dtype -> bf16 and memory_format -> channels_last for every device, wherever tlcore imported them."""
    real = {"amp_dtype": device_module.amp_dtype, "memory_format": device_module.memory_format}
    fakes = {"amp_dtype": lambda device: torch.bfloat16, "memory_format": lambda device: torch.channels_last}
    patched = []
    for name, module in list(sys.modules.items()):
        if name == "tlcore" or name.startswith("tlcore."):
            for attr, fake in fakes.items():
                if getattr(module, attr, None) is real[attr]:
                    monkeypatch.setattr(module, attr, fake)
                    patched.append(f"{name}.{attr}")
    assert "tlcore.device.amp_dtype" in patched and "tlcore.train.memory_format" in patched, patched
    return patched


class ConvSpy:
    """Records, per call of the model's first convolution, the dtype of its output and whether its
    input and weight are channels_last."""

    def __init__(self):
        self.calls: list[tuple[torch.dtype, bool, bool]] = []

    def attach(self, model: nn.Module) -> None:
        conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))

        def hook(module, inputs, output):
            cl = torch.channels_last
            self.calls.append((output.dtype, inputs[0].is_contiguous(memory_format=cl),
                               module.weight.is_contiguous(memory_format=cl)))

        conv.register_forward_hook(hook)


@pytest.fixture
def conv_spy(monkeypatch) -> ConvSpy:
    """A ConvSpy on every model that build_model makes during the test."""
    from tlcore import backbones

    spy = ConvSpy()
    real_build = backbones.build_model

    def build_and_spy(*args, **kwargs):
        model = real_build(*args, **kwargs)
        spy.attach(model)
        return model

    monkeypatch.setattr(backbones, "build_model", build_and_spy)
    return spy


@pytest.mark.parametrize(("strategy", "path"), [("scratch", "full forward"), ("feature_extraction", "feature cache")])
def test_training_runs_in_bf16_autocast_with_channels_last(strategy, path, cpu_like_a_gpu, conv_spy,
                                                           run_training) -> None:
    result, events = run_training(strategy=strategy, epochs=2)
    started = next(data for kind, data in events if kind == "started")
    assert started["amp"] == "bfloat16" and started["path"] == path
    assert conv_spy.calls, "the model never ran"
    assert {dtype for dtype, _, _ in conv_spy.calls} == {torch.bfloat16}, "a forward pass ran outside autocast"
    assert all(x_cl and w_cl for _, x_cl, w_cl in conv_spy.calls), "inputs or weights were not channels_last"
    rows = [data for kind, data in events if kind == "epoch"]
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["train_loss"])) for r in rows)
    assert all(v.dtype == torch.float32 for v in result.best_state.values() if v.is_floating_point())


def test_prediction_runs_in_bf16_autocast_with_channels_last(cpu_like_a_gpu, conv_spy, make_finished_run,
                                                             tmp_path: Path, png_bytes) -> None:
    run_id = make_finished_run(tmp_path / "runs", classes=("a", "b", "c"))
    conv_spy.calls.clear()  # the model built to write the run
    [result] = get_predictor(run_id=run_id, runs_dir=tmp_path / "runs", device="cpu").predict([png_bytes("coffee")])
    assert result.error is None and abs(sum(p.prob for p in result.predictions) - 1) < 1e-3
    assert conv_spy.calls and all(c == (torch.bfloat16, True, True) for c in conv_spy.calls), conv_spy.calls
