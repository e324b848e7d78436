"""The feature cache: a frozen backbone's outputs computed once and kept on disk.

When only the head trains and the inputs are deterministic, every epoch of the tutorial loop
recomputes the same backbone outputs. We compute them once (the input of the head module,
captured with a forward pre-hook, so any head position works), store them keyed by everything
that changes them, and later runs with another head, learning rate or epoch count skip the
backbone entirely.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tlcore import paths
from tlcore.backbones import BackboneSpec, get_module
from tlcore.batches import BatchMaker, index_batches
from tlcore.device import autocast

FORMAT_VERSION = "1"


def feature_key(spec: BackboneSpec, fingerprint: str, resize: int, crop: int) -> str:
    """Cache key: backbone and its weights, dataset content, sizes, preprocessing."""
    parts = [FORMAT_VERSION, spec.name, str(spec.weights), fingerprint, str(resize), str(crop),
             repr(spec.mean), repr(spec.std)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def cache_path(key: str) -> Path:
    return paths.cache_root() / "features" / f"{key}.safetensors"


def load_cached(key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, metadata) for a key, or None on a miss or a damaged file."""
    path = cache_path(key)
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["info"])
        return load_file(str(path)), meta
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError):
        return None  # a damaged cache entry is recomputed, never trusted


def save_cached(key: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    path = cache_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"info": json.dumps(meta)})
    os.replace(tmp, path)


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    spec: BackboneSpec,
    images: torch.Tensor,
    make_batch: BatchMaker,
    batch_size: int,
    on_batch: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run the frozen model over uint8 images and return the head's inputs (float32, CPU)."""
    captured: list[torch.Tensor] = []
    head = get_module(model, spec.head)
    hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].float().cpu()))
    was_training = model.training
    model.eval()
    try:
        batches = list(index_batches(len(images), batch_size, shuffle=False))
        for b, idx in enumerate(batches):
            with autocast(make_batch.device):
                model(make_batch(images[idx]))
            if on_batch:
                on_batch(b, len(batches))
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(captured)
