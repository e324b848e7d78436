"""Picking the device and using it well: the allocator, threads, mixed precision and channels_last."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys

import torch

from tlcore.training.config import PRECISIONS

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_allocator_tuned = False


def tune_allocator() -> None:
    """Keep freed tensor memory in the process instead of returning it to the OS.

    glibc serves large blocks (activations of a batch) with mmap and unmaps them on free, so
    every layer of every batch page-faults fresh memory. Measured here on Lite0 at batch 32:
    42.6 ms of kernel time and 24.5k page faults per image before, 5.8 ms and 3.4k after;
    the forward pass gets up to 2x faster. One arena: glibc gives each new thread an arena of
    64 MB heaps, where large activations still get mmapped, so a training thread would miss
    the tuning (a cold feature-extraction run through JobManager: 15-16 s before, 9.3 s
    after). Call it before starting threads. Linux/glibc only; a no-op elsewhere.
    """
    global _allocator_tuned
    if _allocator_tuned or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 1)
        libc.mallopt(_M_MMAP_THRESHOLD, 2**30)
        libc.mallopt(_M_TRIM_THRESHOLD, 2**30)
    except (OSError, AttributeError):
        pass  # not glibc (musl, etc.): nothing to tune, and nothing breaks
    _allocator_tuned = True


def configure_threads() -> None:
    """Apply `$TLCORE_THREADS` to torch's intra-op thread count, when set.

    On a 2-core machine shared with other work, 2 threads run 3-20x slower than 1 whenever
    another process holds a core (OpenMP threads wait on each other); on a quiet machine 2 are
    about 1.9x faster. The default (unset) keeps torch's choice.
    """
    value = os.environ.get("TLCORE_THREADS")
    if value:
        try:
            threads = int(value)
        except ValueError:
            raise ValueError(f"TLCORE_THREADS must be a whole number of threads, got {value!r}") from None
        if threads >= 1 and threads != torch.get_num_threads():
            torch.set_num_threads(threads)


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then MPS, then CPU for "auto"; an explicit name that is not there raises ValueError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda is not available on this machine: use --device auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device mps is not available on this machine: use --device auto or cpu")
    return torch.device(name)


def gpu_count() -> int:
    """CUDA GPUs this process sees (0 without CUDA): over 1, the app can train one run on several."""
    return torch.cuda.device_count()


# CPU kernels, measured per backbone by `python -m tlcore.bench.kernels` (bench/RESULTS.md: CPU
# ms per image at batch 16, 224 px, 1 thread, on a 2-core AMD EPYC with AVX512-BF16).
# channels_last is the same arithmetic as contiguous and made the forward and the training step
# of each of these faster (step: simple_cnn 0.69x, Lite0 0.65x, ResNet18 0.87x, MobileNetV3
# 0.64x, EfficientNet-B0 0.75x); backbones not measured keep the default layout.
CPU_CHANNELS_LAST = frozenset({"simple_cnn", "efficientnet_lite0", "resnet18", "mobilenet_v3_large",
                               "efficientnet_b0"})
# bf16 autocast changes the arithmetic: "auto" uses it on a CPU with native bf16 only for
# backbones whose training step it made faster (channels_last + bf16 against channels_last fp32:
# simple_cnn 0.66x, ResNet18 0.54x; Lite0 1.23x, MobileNetV3 1.34x, B0 1.32x: slower) and whose
# hymenoptera accuracy stayed within 1 point of fp32: simple_cnn's best epoch was the same
# (0.6993 both); ResNet18's (random weights) was 3.3 points lower (0.6536 vs 0.6863), so it
# stays fp32 unless asked.
CPU_BF16 = frozenset({"simple_cnn"})
# On CUDA "auto" is bf16 autocast (fp16 without bf16) except for these, measured slower in bf16
# on an H200 (bench/RESULTS-gpu.md, python -m tlcore.bench.gpu and gpu_first_step): Lite0's
# training step at batch 64 ran 2,960 images/s in bf16 + channels_last against 3,862 in fp32 +
# channels_last, at batch 16 709 against 879, and its first step in a fresh process took 15.4 s
# against 7.5 s; MobileNetV3's was the same speed either way (2,731 against 2,754), so it keeps
# fp32's arithmetic. ResNet18/50 stay bf16 (1.06x/1.24x over fp32 + channels_last at batch 64).
CUDA_FP32 = frozenset({"efficientnet_lite0", "mobilenet_v3_large"})


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (x86 AVX512-BF16 or AMX, Arm BF16); else torch emulates it, slowly.

    torch.backends.cpu.get_cpu_capability() says "AVX512" on CPUs with AVX512-BF16 too, so the
    kernel's flags decide (Linux); elsewhere, no.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = {word for line in f if line.startswith(("flags", "Features")) for word in line.split()}
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def amp_dtype(device: torch.device, precision: str = "auto", backbone: str | None = None) -> torch.dtype | None:
    """The autocast dtype a run computes in, or None for fp32.

    "auto": on CUDA, bf16 where the GPU supports it, else fp16 (with a GradScaler), except fp32
    for the backbones in CUDA_FP32; on a CPU
    with native bf16, bf16 for the backbones in CPU_BF16; fp32 elsewhere. "bf16" forces bf16,
    "fp32" turns autocast off.

    Raises:
        ValueError: bf16 asked where the device has none; the message says what to use.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        _check_bf16(device)
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        if backbone in CUDA_FP32:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and backbone in CPU_BF16 and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def check_precision(device: str, precision: str, backbone: str) -> None:
    """Raise ValueError, with the fix, when a run on `device` ("auto", "cpu"...) cannot compute in `precision`."""
    amp_dtype(pick_device(device), precision, backbone)


def _check_bf16(device: torch.device) -> None:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision bf16: this GPU has no bf16 support: use --precision auto (fp16 on it) or fp32")
    if device.type == "cpu" and not cpu_has_native_bf16():
        raise ValueError("precision bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), so it would run "
                         "slower than fp32: use --precision auto or fp32")
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"precision bf16 is not supported on {device.type}: use --precision auto or fp32")


DEVICE_DEFAULT = object()


def autocast(device: torch.device, dtype: torch.dtype | None | object = DEVICE_DEFAULT):
    """An autocast context for `dtype` (default: the device's "auto" dtype), or a no-op for None."""
    if dtype is DEVICE_DEFAULT:
        dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def memory_format(device: torch.device, backbone: str | None = None) -> torch.memory_format:
    """channels_last on CUDA (tensor cores) and on CPU for the backbones in CPU_CHANNELS_LAST; else the default."""
    if device.type == "cuda" or (device.type == "cpu" and backbone in CPU_CHANNELS_LAST):
        return torch.channels_last
    return torch.contiguous_format
