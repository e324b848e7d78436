"""Picking the device and using it well: mixed precision and channels_last on CUDA."""

from __future__ import annotations

import contextlib

import torch


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
