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

from tlcore.predict import get_predictor
from tlcore.training import device as device_module


@pytest.fixture
def cpu_like_a_gpu(monkeypatch):
    """amp_dtype -> bf16 and memory_format -> channels_last for every device, wherever tlcore imported them."""
    real = {"amp_dtype": device_module.amp_dtype, "memory_format": device_module.memory_format}
    fakes = {"amp_dtype": lambda device, *_: torch.bfloat16, "memory_format": lambda device, *_: torch.channels_last}
    patched = []
    for name, module in list(sys.modules.items()):
        if name == "tlcore" or name.startswith("tlcore."):
            for attr, fake in fakes.items():
                if getattr(module, attr, None) is real[attr]:
                    monkeypatch.setattr(module, attr, fake)
                    patched.append(f"{name}.{attr}")
    assert "tlcore.training.device.amp_dtype" in patched and "tlcore.training.train.memory_format" in patched, patched
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
    from tlcore.models import backbones

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


# ---- --precision: the choice of arithmetic -------------------------------------------------


@pytest.fixture
def native_bf16(monkeypatch):
    """Set whether the CPU 'has' native bf16 (torch's CPU autocast runs bf16 on any CPU, slowly)."""
    def set_native(value: bool) -> None:
        monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: value)
    return set_native


def test_amp_dtype_on_cpu_follows_the_precision_and_the_cpu(native_bf16) -> None:
    cpu = torch.device("cpu")
    amp = device_module.amp_dtype
    native_bf16(True)
    assert amp(cpu, "fp32", "simple_cnn") is None
    assert amp(cpu, "bf16", "efficientnet_lite0") == torch.bfloat16
    # auto: bf16 only where it sped the CPU step up and kept the accuracy (device.CPU_BF16): not Lite0's
    # step (slower), not ResNet18 (3.3 points lower on hymenoptera)
    assert amp(cpu, "auto", "simple_cnn") == torch.bfloat16
    assert amp(cpu, "auto", "efficientnet_lite0") is None and amp(cpu, "auto", "resnet18") is None
    assert amp(cpu) is None
    native_bf16(False)
    assert amp(cpu, "auto", "simple_cnn") is None
    with pytest.raises(ValueError, match=r"no native bf16.*--precision auto or fp32"):
        amp(cpu, "bf16", "simple_cnn")
    with pytest.raises(ValueError, match="choose one of auto, fp32, bf16"):
        amp(cpu, "fp16")


def test_amp_dtype_on_cuda_keeps_bf16_else_fp16(monkeypatch) -> None:
    """CUDA's choice without a GPU: only torch.cuda.is_bf16_supported is asked."""
    cuda = torch.device("cuda")
    for supported, auto in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert device_module.amp_dtype(cuda, "auto", "resnet18") == auto
        assert device_module.amp_dtype(cuda, "fp32", "resnet18") is None
        # measured slower (Lite0) or no faster (MobileNetV3) in bf16 on CUDA: fp32 unless asked
        assert device_module.amp_dtype(cuda, "auto", "efficientnet_lite0") is None
    with pytest.raises(ValueError, match=r"no bf16 support: use --precision auto \(fp16 on it\) or fp32"):
        device_module.amp_dtype(cuda, "bf16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert device_module.amp_dtype(cuda, "bf16") == torch.bfloat16
    assert device_module.amp_dtype(cuda, "bf16", "efficientnet_lite0") == torch.bfloat16  # asked: given


def test_channels_last_on_cpu_for_the_measured_backbones() -> None:
    cpu = torch.device("cpu")
    assert device_module.memory_format(cpu, "efficientnet_lite0") == torch.channels_last
    assert device_module.memory_format(cpu, "vgg16") == torch.contiguous_format  # not measured
    assert device_module.memory_format(torch.device("cuda"), "vgg16") == torch.channels_last


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
@pytest.mark.parametrize(("strategy", "path"), [("scratch", "full forward"), ("feature_extraction", "feature cache")])
def test_the_precision_reaches_the_training_loop(precision, dtype, strategy, path, native_bf16, conv_spy,
                                                  run_training) -> None:
    native_bf16(True)
    result, events = run_training(strategy=strategy, epochs=1, precision=precision)
    started = next(data for kind, data in events if kind == "started")
    assert started["path"] == path and started["amp"] == ("bfloat16" if precision == "bf16" else "fp32")
    assert conv_spy.calls and {d for d, _, _ in conv_spy.calls} == {dtype}, conv_spy.calls
    # simple_cnn computes channels_last on the CPU (device.CPU_CHANNELS_LAST), whatever the precision
    assert all(x_cl and w_cl for _, x_cl, w_cl in conv_spy.calls)


def test_the_feature_cache_follows_the_precision(native_bf16, run_training) -> None:
    native_bf16(True)
    logs = {}
    for precision in ("fp32", "bf16", "fp32"):
        _, events = run_training(strategy="feature_extraction", epochs=1, precision=precision)
        logs.setdefault(precision, []).append(any("cache hit" in d.get("message", "") for k, d in events if k == "log"))
    assert logs == {"fp32": [False, True], "bf16": [False]}  # bf16 features are not fp32's


def test_bf16_on_a_cpu_without_it_is_refused_before_training(native_bf16, run_training) -> None:
    native_bf16(False)
    with pytest.raises(ValueError, match="no native bf16"):
        run_training(precision="bf16")


def test_the_config_refuses_an_unknown_precision(tiny_config) -> None:
    assert tiny_config(precision="bf16").validate().precision == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'fp16': choose one of auto, fp32, bf16"):
        tiny_config(precision="fp16").validate()


def test_prediction_on_cpu_uses_channels_last_for_a_measured_backbone(conv_spy, make_finished_run, tmp_path: Path,
                                                                      png_bytes) -> None:
    run_id = make_finished_run(tmp_path / "runs", classes=("a", "b"))  # simple_cnn
    conv_spy.calls.clear()
    [result] = get_predictor(run_id=run_id, runs_dir=tmp_path / "runs", device="cpu").predict([png_bytes("coffee")])
    assert result.error is None
    assert conv_spy.calls and all(c == (torch.float32, True, True) for c in conv_spy.calls), conv_spy.calls
