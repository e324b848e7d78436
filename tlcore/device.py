"""Picking the device and using it well: mixed precision and channels_last on CUDA."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

import torch

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


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA GPUs that support it, else fp16 on CUDA; None (fp32) elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device):
    """An autocast context for the device's mixed-precision dtype, or a no-op."""
    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last speeds convolutions on CUDA tensor cores; CPU keeps the default."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format
