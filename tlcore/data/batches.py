"""From decoded uint8 images to normalized float batches, on the training device.

Images are decoded once (see data.py) at the resize size; each batch is cropped, optionally
augmented, and normalized here, so epochs never touch an image decoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop of a (N, C, H, W) batch to size x size."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def flip_crop(x: torch.Tensor, size: int, generator: torch.Generator, scale=(0.35, 1.0)) -> torch.Tensor:
    """Random resized crop + horizontal flip per image (float input, float output)."""
    n, _, h, w = x.shape
    out = torch.empty((n, x.shape[1], size, size), dtype=x.dtype, device=x.device)
    r = torch.rand((n, 4), generator=generator).tolist()
    for i in range(n):
        area = h * w * (scale[0] + (scale[1] - scale[0]) * r[i][0])
        ratio = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * r[i][1])
        cw = min(w, max(1, round(math.sqrt(area * ratio))))
        ch = min(h, max(1, round(math.sqrt(area / ratio))))
        top, left = int((h - ch) * r[i][2]), int((w - cw) * r[i][3])
        crop = x[i : i + 1, :, top : top + ch, left : left + cw]
        out[i : i + 1] = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)
    flips = torch.rand(n, generator=generator) < 0.5
    out[flips.to(x.device)] = out[flips.to(x.device)].flip(-1)
    return out


class BatchMaker:
    """Turns uint8 image batches into normalized model inputs."""

    def __init__(self, crop: int, mean, std, device: torch.device, memory_format=torch.contiguous_format):
        self.crop = crop
        self.device = device
        self.memory_format = memory_format
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def __call__(self, images: torch.Tensor, augment: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.device.type == "cuda" and not images.is_pinned():
            # A batch gathered by indexing (`inputs[idx]`) is pageable even when `inputs` is
            # pinned, and a non_blocking copy from pageable memory is synchronous. torch's
            # caching host allocator reuses pinned blocks safely across asynchronous copies.
            images = images.pin_memory()
        x = images.to(self.device, non_blocking=True)
        if augment:
            x = flip_crop(x.float(), self.crop, generator)
        else:
            x = center_crop(x, self.crop).float()
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)


def index_batches(n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None = None):
    """Yield index tensors covering range(n) in batches (shuffled with `generator`)."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def training_batches(n: int, batch_size: int, generator: torch.Generator | None = None):
    """Shuffled index batches that are never a lone image.

    A training batch of one crashes BatchNorm ("Expected more than 1 value per channel"), and
    dropping it would silently skip an image every epoch; it joins the batch before it instead.
    """
    batches = list(index_batches(n, batch_size, shuffle=True, generator=generator))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches
