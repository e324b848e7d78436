"""The training loop, readable top to bottom: prepare, then epochs of train + evaluate.

`train` knows nothing of the UI. It reports through `emit(kind, data)` (see events.py) and
checks a stop flag between batches, so cancel takes effect within one batch. Errors a user can
fix become `TrainingError` with a message that says how.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tlcore import backbones, features
from tlcore.batches import BatchMaker, index_batches
from tlcore.config import TrainConfig
from tlcore.data import DataSource, resolve_data
from tlcore.device import amp_dtype, autocast, configure_threads, memory_format, pick_device, tune_allocator
from tlcore.events import Emit
from tlcore.strategies import apply_train_mode, make_strategy

# A training step holds roughly this many times its input batch in activations and gradients;
# used only to refuse batches that clearly cannot fit in memory.
ACTIVATION_FACTOR = 40
# Frozen-backbone forward batch for the feature cache: per-image time is flat from 4 to 16 on
# CPU and worse at 32; 16 keeps GPU batches reasonable too.
FEATURE_BATCH = 16


class TrainingError(RuntimeError):
    """A run cannot go on; the message says why and what to do."""


class Cancelled(Exception):
    """The user stopped the run; carries what was learned so far."""

    def __init__(self, result: TrainResult):
        super().__init__("cancelled")
        self.result = result


@dataclass
class TrainResult:
    summary: dict
    best_state: dict[str, torch.Tensor] | None


@dataclass
class _Run:
    """What the phases share."""

    cfg: TrainConfig
    spec: backbones.BackboneSpec
    device: torch.device
    emit: Emit
    stop: threading.Event
    generator: torch.Generator

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise _StopNow


class _StopNow(Exception):
    pass


# ---- preparation --------------------------------------------------------------------------


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _check_fits(cfg: TrainConfig, crop: int, device: torch.device) -> None:
    """Refuse, before allocating, a CPU batch that clearly cannot fit in memory."""
    if device.type != "cpu":
        return
    need = cfg.batch_size * 3 * crop * crop * 4 * ACTIVATION_FACTOR
    free = _available_memory()
    if free is not None and need > free:
        raise TrainingError(
            f"batch size {cfg.batch_size} at {crop} px needs about {need / 2**30:.0f} GB, more than the "
            f"{free / 2**30:.0f} GB free: use a smaller batch size or image size"
        )


def _optimizer(cfg: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    for g in groups:
        g["initial_lr"] = g["lr"]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer):
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.epochs // 3), gamma=0.1)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    return None


# ---- one epoch ----------------------------------------------------------------------------


def _check_loss(loss: torch.Tensor, epoch: int, batch: int, lr: float) -> None:
    if not torch.isfinite(loss):
        kind = "NaN" if torch.isnan(loss) else "infinite"
        raise TrainingError(
            f"loss became {kind} at epoch {epoch + 1}, batch {batch + 1}: the run diverged; "
            f"lower the learning rate (it was {lr:g})"
        )


def train_one_epoch(run: _Run, forward, inputs, labels, opt, scaler, epoch: int) -> dict:
    """One pass over the training split; `forward(batch_inputs, augment)` gives logits."""
    total_loss, correct, seen = 0.0, 0, 0
    batches = list(index_batches(len(labels), run.cfg.batch_size, shuffle=True, generator=run.generator))
    for b, idx in enumerate(batches):
        run.check_stop()
        y = labels[idx].to(run.device, non_blocking=True)
        with autocast(run.device):
            logits = forward(inputs[idx], True)
            loss = F.cross_entropy(logits.float(), y)
        _check_loss(loss, epoch, b, opt.param_groups[-1]["lr"])
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        total_loss += loss.item() * len(idx)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(idx)
        run.emit("batch", {"phase": "train", "epoch": epoch + 1, "epochs": run.cfg.epochs,
                           "batch": b + 1, "batches": len(batches), "loss": loss.item()})
    return {"train_loss": total_loss / seen, "train_acc": correct / seen}


@torch.inference_mode()
def evaluate(run: _Run, forward, inputs, labels, epoch: int) -> dict:
    """Loss, accuracy and (with more than 5 classes) top-5 accuracy on the validation split."""
    total_loss, correct, correct5, seen = 0.0, 0, 0, 0
    # Validation batches match training's: on CPU, larger batches are slower per image
    # (Lite0, 1 thread: 19 ms/image at 4-16, 24 ms at 32) and would raise peak memory.
    batches = list(index_batches(len(labels), run.cfg.batch_size, shuffle=False))
    for b, idx in enumerate(batches):
        run.check_stop()
        y = labels[idx].to(run.device, non_blocking=True)
        with autocast(run.device):
            logits = forward(inputs[idx], False).float()
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        top5 = logits.shape[1] > 5
        if top5:
            correct5 += (logits.topk(5, 1).indices == y[:, None]).any(1).sum().item()
        seen += len(idx)
        run.emit("batch", {"phase": "val", "epoch": epoch + 1, "epochs": run.cfg.epochs,
                           "batch": b + 1, "batches": len(batches)})
    out = {"val_loss": total_loss / seen, "val_acc": correct / seen}
    if top5:
        out["val_top5"] = correct5 / seen
    return out


# ---- the whole run ------------------------------------------------------------------------


def _features(run: _Run, model, source: DataSource, resize: int, crop: int, make_batch: BatchMaker):
    """Cached head inputs for both splits: from disk, or computed once and stored."""
    key = features.feature_key(run.spec, source.fingerprint, resize, crop)
    hit = features.load_cached(key)
    if hit is not None:
        tensors, meta = hit
        run.emit("log", {"message": "feature cache hit: the backbone is skipped entirely"})
        return tensors, meta["skipped"]
    run.emit("log", {"message": "backbone frozen and no augmentation: computing features once and caching them"})
    data = _decode(run, source, resize)
    out = {}
    for split in ("train", "val"):
        def progress(b, n, split=split):
            run.check_stop()
            run.emit("batch", {"phase": f"features ({split})", "epoch": 0, "epochs": run.cfg.epochs,
                               "batch": b + 1, "batches": n})
        out[f"{split}_x"] = features.extract_features(model, run.spec, getattr(data, split).images, make_batch,
                                                      FEATURE_BATCH, progress)
        out[f"{split}_y"] = getattr(data, split).labels
    features.save_cached(key, out, {"skipped": data.skipped})
    return out, data.skipped


def _decode(run: _Run, source: DataSource, resize: int):
    t0 = time.perf_counter()
    data = source.decode(resize)
    run.emit("log", {"message": f"decoded {len(data.train) + len(data.val)} images once in "
                                f"{time.perf_counter() - t0:.1f} s; epochs reuse them"})
    if data.skipped:
        run.emit("log", {"message": f"skipped {len(data.skipped)} unreadable files, e.g. {data.skipped[0][1]}"})
    return data


def train(cfg: TrainConfig, emit: Emit, stop: threading.Event | None = None) -> TrainResult:
    """Train one run end to end.

    Raises:
        Cancelled: `stop` was set; carries the summary and best weights so far.
        TrainingError, ValueError: the run cannot go on (message says what to do).
    """
    cfg.validate()
    tune_allocator()
    configure_threads()
    stop = stop or threading.Event()
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    spec = backbones.get_backbone(cfg.backbone)
    run = _Run(cfg, spec, device, emit, stop, torch.Generator().manual_seed(cfg.seed))
    resize, crop = spec.preprocessing(cfg.image_size)
    _check_fits(cfg, crop, device)

    source = resolve_data(cfg.data, val_fraction=cfg.val_fraction, subset=cfg.subset, seed=cfg.seed)
    for note in source.notes:
        emit("log", {"message": note})
    strategy = make_strategy(cfg.strategy, unfreeze_groups=cfg.unfreeze_groups, lr_factor=cfg.lr_factor,
                             head_epochs=cfg.head_epochs)
    pretrained = strategy.pretrained and spec.weights is not None
    if strategy.pretrained and spec.weights is None:
        emit("log", {"message": f"{spec.name} has no pretrained weights: it starts from random weights"})
    model = backbones.build_model(cfg.backbone, len(source.class_names), pretrained=pretrained,
                                  head=cfg.head, hidden=cfg.hidden)
    groups = backbones.param_groups(model, cfg.backbone)
    opt = _optimizer(cfg, strategy.optimizer_groups(groups, cfg.lr))
    sched = _scheduler(cfg, opt)
    model.to(device, memory_format=memory_format(device))
    make_batch = BatchMaker(crop, spec.mean, spec.std, device, memory_format(device))
    use_cache = (cfg.feature_cache and cfg.augment == "none"
                 and all(strategy.backbone_frozen(e) for e in range(cfg.epochs)))
    if cfg.augment != "none" and strategy.backbone_frozen(0):
        emit("log", {"message": "augmentation is on: no feature cache, the full backbone runs every epoch"})
    trainable = backbones.count_params(model, trainable_only=True)
    emit("started", {"device": str(device), "class_names": source.class_names,
                     "num_train": len(source.train_items), "num_val": len(source.val_items),
                     "trainable_params": trainable, "total_params": backbones.count_params(model),
                     "path": "feature cache" if use_cache else "full forward",
                     "amp": str(amp_dtype(device)).replace("torch.", "") if amp_dtype(device) else "fp32"})

    head = backbones.get_module(model, spec.head)
    try:
        if use_cache:
            tensors, skipped = _features(run, model, source, resize, crop, make_batch)
            train_x, train_y, val_x, val_y = (tensors[k] for k in ("train_x", "train_y", "val_x", "val_y"))
            train_x, val_x = train_x.to(device), val_x.to(device)

            def forward(x, _augment):
                return head(x).flatten(1)
        else:
            data = _decode(run, source, resize)
            skipped = data.skipped
            train_x, train_y, val_x, val_y = data.train.images, data.train.labels, data.val.images, data.val.labels
            if device.type == "cuda" and train_x.numel() < 2**31:
                # Pinned memory lets the host-to-GPU copy overlap compute (non_blocking).
                train_x, val_x = train_x.pin_memory(), val_x.pin_memory()
            augment = cfg.augment != "none"

            def forward(x, train_mode):
                return model(make_batch(x, augment=augment and train_mode, generator=run.generator))
    except _StopNow:
        raise Cancelled(TrainResult({"epochs": 0, "seconds": time.perf_counter() - t_start}, None)) from None

    scaler = torch.amp.GradScaler("cuda") if amp_dtype(device) == torch.float16 else None
    history: list[dict] = []
    best_acc, best_epoch, best_state = -1.0, 0, None

    def summary() -> dict:
        return {
            "best_val_acc": best_acc if history else None, "best_epoch": best_epoch,
            "final_val_acc": history[-1]["val_acc"] if history else None, "epochs": len(history),
            "seconds": round(time.perf_counter() - t_start, 3), "trainable_params": trainable,
            "total_params": backbones.count_params(model), "skipped": len(skipped),
            "skipped_files": skipped[:20],
        }

    try:
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            msg = strategy.on_epoch_start(epoch, groups)
            if msg:
                emit("log", {"message": msg})
            apply_train_mode(model, groups)
            if use_cache:
                head.train()
            row = train_one_epoch(run, forward, train_x, train_y, opt, scaler, epoch)
            model.eval()
            row |= evaluate(run, forward, val_x, val_y, epoch)
            row |= {"epoch": epoch + 1, "lr": opt.param_groups[-1]["lr"],
                    "seconds": round(time.perf_counter() - t0, 3)}
            history.append(row)
            if row["val_acc"] > best_acc:
                best_acc, best_epoch = row["val_acc"], epoch + 1
                best_state = copy.deepcopy((head if use_cache else model).state_dict())
            emit("epoch", row)
            if sched is not None:
                sched.step()
    except _StopNow:
        raise Cancelled(TrainResult(summary(), _full_state(model, head, best_state, use_cache))) from None
    except torch.OutOfMemoryError:
        raise TrainingError(f"out of GPU memory at batch size {cfg.batch_size}, {crop} px: "
                            "use a smaller batch size or image size") from None
    except RuntimeError as exc:
        if "can't allocate memory" in str(exc) or "not enough memory" in str(exc):
            raise TrainingError(f"out of memory at batch size {cfg.batch_size}, {crop} px: "
                                "use a smaller batch size or image size") from None
        raise
    result = TrainResult(summary(), _full_state(model, head, best_state, use_cache))
    if math.isnan(result.summary["best_val_acc"] or 0.0):
        raise TrainingError("validation accuracy is NaN: check the data")
    return result


def _full_state(model: nn.Module, head: nn.Module, best_state, head_only: bool) -> dict | None:
    """The full model's weights at the best epoch (the head's best state folded in)."""
    if best_state is None:
        return None
    if head_only:
        head.load_state_dict(best_state)
    else:
        model.load_state_dict(best_state)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}
