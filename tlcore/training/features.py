"""The feature cache: a frozen backbone's outputs computed once and kept on disk.

When only the head trains and the inputs are deterministic, every epoch of the tutorial loop
recomputes the same backbone outputs. We compute them once (the input of the head module,
captured with a forward pre-hook, so any head position works), store them keyed by everything
that changes them, and later runs with another head, learning rate or epoch count skip the
backbone entirely.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tlcore import paths
from tlcore.data.batches import BatchMaker, index_batches
from tlcore.models.backbones import BackboneSpec, get_module
from tlcore.training.device import DEVICE_DEFAULT, autocast

FORMAT_VERSION = "2"


def backbone_digest(model: nn.Module, spec: BackboneSpec) -> str:
    """Hash of every tensor the frozen backbone computes with (the head's excluded).

    The features depend on these values, not on a weights *name*: a backbone without
    pretrained weights is random and seed-dependent, and a package upgrade may ship other
    weights under the same name. Hashing costs about 20 ms for Lite0 (19 MB), under a second
    for VGG16, against minutes of feature extraction.
    """
    h = hashlib.blake2b(digest_size=16)
    head = spec.head + "."
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(head):
            continue
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(memoryview(t.view(torch.uint8).numpy()))
    return h.hexdigest()


def feature_key(spec: BackboneSpec, fingerprint: str, resize: int, crop: int, weights: str, precision: str) -> str:
    """Cache key: backbone weights (`backbone_digest`), dataset content, sizes, preprocessing,
    and the arithmetic (`precision`: device type and autocast dtype, e.g. "cuda-bfloat16")."""
    parts = [FORMAT_VERSION, spec.name, weights, precision, fingerprint, str(resize), str(crop),
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
    # A private temporary file per writer: two threads (or processes) saving the same entry
    # each write their own file and the last os.replace wins, with identical content.
    fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata={"info": json.dumps(meta)})
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def extract_features(
    model: nn.Module,
    spec: BackboneSpec,
    images: torch.Tensor,
    make_batch: BatchMaker,
    batch_size: int,
    on_batch: Callable[[int, int], None] | None = None,
    amp: torch.dtype | None | object = DEVICE_DEFAULT,
) -> torch.Tensor:
    """Run the frozen model over uint8 images and return the head's inputs (float32, CPU);
    `amp`: the autocast dtype (None: fp32; default: the device's)."""
    batches = ((idx, images[idx]) for idx in index_batches(len(images), batch_size, shuffle=False))
    return extract_batches(model, spec, batches, len(images), make_batch, -(-len(images) // batch_size), on_batch,
                           amp)[0]


@torch.inference_mode()
def extract_batches(
    model: nn.Module,
    spec: BackboneSpec,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    n: int,
    make_batch: BatchMaker,
    num_batches: int,
    on_batch: Callable[[int, int], None] | None = None,
    amp: torch.dtype | None | object = DEVICE_DEFAULT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's inputs (float32, CPU) for rows 0..n-1 from (positions, uint8 images) batches.

    Returns the (n, ...) features and a bool mask of the rows some batch gave (the others,
    unreadable files, are zeros). Only the features are kept, never the decoded images.
    """
    captured: list[torch.Tensor] = []
    head = get_module(model, spec.head)
    hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].float().cpu()))
    was_training = model.training
    model.eval()
    out, seen = None, torch.zeros(n, dtype=torch.bool)
    try:
        for b, (positions, images) in enumerate(batches):
            with autocast(make_batch.device, amp):
                model(make_batch(images))
            x = captured.pop()
            if out is None:
                out = x.new_zeros((n, *x.shape[1:]))
            out[positions] = x
            seen[positions] = True
            if on_batch:
                on_batch(b, num_batches)
    finally:
        hook.remove()
        model.train(was_training)
    if out is None:  # no readable row (or none at all): the width is unknown and unused
        out = torch.zeros((n, 0))
    return out, seen
