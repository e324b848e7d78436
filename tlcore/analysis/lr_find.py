"""The learning-rate finder (fastai's `lr_find`): an exponential sweep of the learning rate.

Train for up to `num_iter` batches while the learning rate grows from `start_lr` to `end_lr`
geometrically, record the smoothed loss, stop once it exceeds 4x its minimum, then put every
weight back as it was. The suggestion is fastai's "valley": the middle of the longest stretch
over which the loss keeps falling. A strategy with per-group rates (discriminative, gradual)
keeps its ratios: the sweep scales every group, and the rates reported are the head's.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tlcore.data.batches import BatchMaker, index_batches
from tlcore.data.sources import resolve_data
from tlcore.models import backbones
from tlcore.training.config import TrainConfig
from tlcore.training.device import amp_dtype, autocast, configure_threads, memory_format, pick_device
from tlcore.training.strategies import apply_train_mode, make_strategy
from tlcore.training.train import cached_train_features, make_optimizer

SMOOTHING = 0.98  # fastai's exponential moving average of the loss
STOP_FACTOR = 4.0  # stop when the smoothed loss is this many times its minimum


@dataclass
class LRFinderResult:
    """The sweep: learning rates, smoothed losses, and the suggested rate."""

    lrs: list[float]
    losses: list[float]
    suggested_lr: float

    def to_dict(self) -> dict:
        return {"lrs": self.lrs, "losses": self.losses, "suggested_lr": self.suggested_lr}


def valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's "valley" rule: the longest run of falling loss, two thirds of the way down it.

    The first tenth and the last five points are left out, as fastai does: the start is noise
    from an untrained head and the end is the blow-up.
    """
    skip = len(lrs) // 10
    lrs_s, losses_s = (lrs[skip:-5], losses[skip:-5]) if len(lrs) - skip > 8 else (lrs, losses)
    n = len(losses_s)
    # Longest decreasing subsequence ending at each point (O(n^2); n <= a few hundred).
    longest = [1] * n
    start, end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses_s[i] < losses_s[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[end] < longest[i]:
            end = i
            start = end - longest[end]
    sections = (end - start) / 3
    return float(lrs_s[min(start + int(sections) + int(sections / 2), n - 1)])


def sweep(model: nn.Module, optimizer: torch.optim.Optimizer, step_loss: Callable[[], torch.Tensor], *,
          start_lr: float = 1e-7, end_lr: float = 10.0, num_iter: int = 100,
          stop: threading.Event | None = None, on_batch: Callable[[int, int], None] | None = None,
          ) -> tuple[list[float], list[float]]:
    """Sweep the learning rate of `optimizer` and restore `model` and `optimizer` exactly afterwards.

    Args:
        model: the model whose weights (and BatchNorm statistics) are restored.
        optimizer: its optimizer; each group's rate is scaled, keeping their ratios, so that the
            last group's (the head's) goes from `start_lr` to `end_lr`.
        step_loss: computes one training batch's loss (the sweep does backward and the step).
        num_iter: the most batches to train.

    Returns:
        (learning rates, smoothed losses), one pair per batch trained.
    """
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(optimizer.state_dict())
    ratios = [g["lr"] / optimizer.param_groups[-1]["lr"] for g in optimizer.param_groups]
    lrs, losses, avg, best = [], [], 0.0, math.inf
    try:
        for i in range(num_iter):
            if stop is not None and stop.is_set():
                break
            lr = start_lr * (end_lr / start_lr) ** (i / max(num_iter - 1, 1))
            for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
                group["lr"] = lr * ratio
            loss = step_loss()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            if not math.isfinite(value):
                break
            avg = SMOOTHING * avg + (1 - SMOOTHING) * value
            smoothed = avg / (1 - SMOOTHING ** (i + 1))
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if on_batch is not None:
                on_batch(i, num_iter)
            if smoothed > STOP_FACTOR * best:
                break
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_opt)
        optimizer.zero_grad(set_to_none=True)
    return lrs, losses


def _cycle(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    while True:  # as many passes over the training split as the sweep needs
        yield from index_batches(n, batch_size, shuffle=True, generator=generator)


def lr_find(cfg: TrainConfig, *, start_lr: float = 1e-7, end_lr: float = 10.0, num_iter: int = 100,
            emit: Callable[[str, dict], None] | None = None, stop: threading.Event | None = None) -> LRFinderResult:
    """Sweep the learning rate for the backbone, data and strategy of `cfg`.

    The model is set up as the run's first epoch trains it; with a frozen backbone and no
    augmentation the sweep trains the head on the feature cache, so it takes seconds.

    Raises:
        ValueError: a bad config or dataset, or a sweep that never got a finite loss.
    """
    cfg.validate()
    configure_threads()
    emit = emit or (lambda _kind, _data: None)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    spec = backbones.get_backbone(cfg.backbone)
    resize, crop = spec.preprocessing(cfg.image_size)
    data_seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
    source = resolve_data(cfg.data, val_fraction=cfg.val_fraction, subset=cfg.subset, seed=data_seed)
    strategy = make_strategy(cfg.strategy, unfreeze_groups=cfg.unfreeze_groups, lr_factor=cfg.lr_factor,
                             head_epochs=cfg.head_epochs)
    model = backbones.build_model(cfg.backbone, len(source.class_names),
                                  pretrained=strategy.pretrained and spec.weights is not None,
                                  head=cfg.head, hidden=cfg.hidden)
    groups = backbones.param_groups(model, cfg.backbone)
    optimizer = make_optimizer(cfg, strategy.optimizer_groups(groups, cfg.lr))
    strategy.on_epoch_start(0, groups)
    model.to(device, memory_format=memory_format(device, cfg.backbone))
    head = backbones.get_module(model, spec.head)
    generator = torch.Generator().manual_seed(cfg.seed)
    amp = amp_dtype(device, cfg.precision, cfg.backbone)  # the arithmetic a run of cfg trains in
    if cfg.feature_cache and cfg.augment == "none" and strategy.backbone_frozen(0):
        inputs, labels = cached_train_features(cfg, model, source, emit, stop)
        inputs = inputs.to(device)

        def forward(x):
            return head(x).flatten(1)
    else:
        decoded = source.decode(resize)
        inputs, labels = decoded.train.images, decoded.train.labels
        make_batch = BatchMaker(crop, spec.mean, spec.std, device, memory_format(device, cfg.backbone))

        def forward(x):
            return model(make_batch(x, augment=cfg.augment != "none", generator=generator))
    apply_train_mode(model, groups)
    head.train()
    batches = _cycle(len(labels), cfg.batch_size, generator)

    def step_loss() -> torch.Tensor:
        idx = next(batches)
        with autocast(device, amp):
            logits = forward(inputs[idx])
        return F.cross_entropy(logits.float(), labels[idx].to(device))

    def progress(i: int, n: int) -> None:
        emit("batch", {"phase": "lr_find", "batch": i + 1, "batches": n})

    lrs, losses = sweep(model, optimizer, step_loss, start_lr=start_lr, end_lr=end_lr, num_iter=num_iter,
                        stop=stop, on_batch=progress)
    if len(lrs) < 2:
        raise ValueError("the learning-rate sweep diverged at once: lower start_lr")
    return LRFinderResult(lrs, losses, valley(lrs, losses))
