"""The training loop, readable top to bottom: prepare, then epochs of train + evaluate.

`train` knows nothing of the UI. It reports through `emit(kind, data)` (see events.py) and
checks a stop flag between batches, so cancel takes effect within one batch. Errors a user can
fix become `TrainingError` with a message that says how.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tlcore.data.batches import BatchMaker, index_batches, training_batches
from tlcore.data.sources import DataError, DataSource, resolve_data
from tlcore.data.stream import decoded_batches, prefetch
from tlcore.models import backbones
from tlcore.names import count
from tlcore.training import distributed, features
from tlcore.training.config import TrainConfig
from tlcore.training.device import amp_dtype, autocast, configure_threads, memory_format, pick_device, tune_allocator
from tlcore.training.events import Emit
from tlcore.training.rng import bind_generator, device_generator
from tlcore.training.strategies import apply_train_mode, make_strategy

# A training step holds roughly this many times its input batch in activations and gradients;
# used only to refuse batches that clearly cannot fit in memory.
ACTIVATION_FACTOR = 40
# Frozen-backbone forward batch for the feature cache: per-image time is flat from 4 to 16 on
# CPU and worse at 32; 16 keeps GPU batches reasonable too.
FEATURE_BATCH = 16
# Training and validation batches gathered ahead of the model, in a thread (stream.prefetch).
PREFETCH = 2


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
    # The best epoch's per-image validation results (the val_results.json contract, runs.py).
    val_results: dict | None = None


@dataclass
class _Run:
    """What the phases share."""

    cfg: TrainConfig
    spec: backbones.BackboneSpec
    device: torch.device
    emit: Emit
    stop: threading.Event
    generator: torch.Generator
    guard: DivergenceGuard = field(default_factory=lambda: DivergenceGuard())
    # Under torchrun: this process's rank and how work is shared (distributed.py); else a World of 1.
    world: distributed.World = field(default_factory=distributed.World)

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise _StopNow

    @property
    def amp(self) -> torch.dtype | None:
        """The autocast dtype of every forward of the run (None: fp32), from cfg.precision."""
        return amp_dtype(self.device, self.cfg.precision, self.cfg.backbone)


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
    # fused: Adam's update in one kernel per step instead of a Python loop over every parameter
    # (Lite0 on CPU: 3.9 ms a step instead of 11.2, 3% of a batch-4 fine-tuning step); CPU and
    # CUDA only, where torch has the fused kernel.
    fused = True if pick_device(cfg.device).type in ("cpu", "cuda") else None  # None: torch's default
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def step_milestones(epochs: int) -> list[int]:
    """Epochs (0-based) at whose start the `step` schedule divides the rate by 10: one third
    and two thirds into the run (5 epochs: 1e-3, 1e-3, 1e-4, 1e-5, 1e-5)."""
    return sorted({max(1, round(epochs * k / 3)) for k in (1, 2)} - {epochs})


def _scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer):
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=step_milestones(cfg.epochs), gamma=0.1)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    return None


# ---- one epoch ----------------------------------------------------------------------------


@dataclass
class DivergenceGuard:
    """Fails a run whose loss is non-finite or has run far above where the run started.

    A diverged run otherwise ends "finished" at chance accuracy with losses in the millions,
    in silence. The reference is the run's first batch loss, the untrained head's, which
    normal training stays below (at least 1.0, so a run that starts near zero is not failed
    for a wobble); the check is on a smoothed loss, so one bad batch that the run recovers
    from does not fail it.
    """

    factor: float = 20.0
    reference: float | None = None
    smoothed: float | None = None

    def check(self, loss: float, epoch: int, batch: int, lr: float) -> None:
        where = f"epoch {epoch + 1}, batch {batch + 1}"
        if not math.isfinite(loss):
            kind = "NaN" if math.isnan(loss) else "infinite"
            raise TrainingError(f"loss became {kind} at {where}: the run diverged; lower the learning rate (it was {lr:g})")
        if self.reference is None:
            self.reference = max(loss, 1.0)
        self.smoothed = loss if self.smoothed is None else 0.7 * self.smoothed + 0.3 * loss
        if self.smoothed > self.factor * self.reference:
            raise TrainingError(
                f"the loss diverged at {where} (loss {self.smoothed:.3g}, more than {self.factor:g}x the first "
                f"batch's {self.reference:.3g}): lower the learning rate (it was {lr:g})"
            )


def _gathered(inputs, batches: list):
    """Each batch (an index tensor, or a tuple starting with one) with `inputs[idx]` appended,
    gathered PREFETCH batches ahead in a thread while the model computes.

    A spilled split's rows are read from disk here; a split in memory is copied. The order and
    the rows are the same as without prefetch; augmentation, which draws from the run's
    generator, stays in the caller's thread. Inputs already on a GPU are indexed in place.
    """
    on_cpu = not (isinstance(inputs, torch.Tensor) and inputs.device.type != "cpu")
    # index_select copies whole rows; `inputs[idx]` on a uint8 image tensor went element by
    # element: 3-8 ms against 18-26 ms for a batch of 16 images at 256 px on this CPU.
    take = inputs.index_select if on_cpu and isinstance(inputs, torch.Tensor) else None

    def items():
        for batch in batches:
            parts = batch if isinstance(batch, tuple) else (batch,)
            yield (*parts, take(0, parts[0]) if take else inputs[parts[0]])

    return contextlib.closing(prefetch(items(), PREFETCH if on_cpu else 0))


def train_one_epoch(run: _Run, forward, inputs, labels, opt, scaler, epoch: int) -> dict:
    """One pass over the training split; `forward(batch_inputs, augment)` gives logits."""
    total_loss, correct, seen = 0.0, 0, 0
    # Never a batch of one: BatchNorm cannot train on it (training_batches merges it). Under
    # torchrun each rank trains its slice of every batch (never a slice of one either).
    world = run.world
    batches = world.shard_batches(training_batches(len(labels), run.cfg.batch_size, run.generator))
    with _gathered(inputs, batches) as gathered:
        for b, (idx, batch_n, x) in enumerate(gathered):
            run.check_stop()
            y = labels[idx].to(run.device, non_blocking=True)
            with autocast(run.device, run.amp):
                logits = forward(x, True)
                loss = world.loss(F.cross_entropy, logits.float(), y, batch_n)
            batch_loss, batch_correct = world.batch_stats(loss, logits, y)  # the whole batch's, on every rank
            run.guard.check(batch_loss, epoch, b, opt.param_groups[-1]["lr"])
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            total_loss += batch_loss * batch_n
            correct += batch_correct
            seen += batch_n
            run.emit("batch", {"phase": "train", "epoch": epoch + 1, "epochs": run.cfg.epochs,
                               "batch": b + 1, "batches": len(batches), "loss": batch_loss})
    return {"train_loss": total_loss / seen, "train_acc": correct / seen}


@torch.inference_mode()
def evaluate(run: _Run, forward, inputs, labels, epoch: int, probs: list | None = None) -> dict:
    """Loss, accuracy and (with more than 5 classes) top-5 accuracy on the validation split.

    With `probs`, each batch's softmax probabilities (CPU, float32) are appended to it. Under
    torchrun each rank evaluates its own rows (no padding, no image twice), the counts are summed
    over ranks, and `probs` ends as one tensor of every row in order.
    """
    total_loss, correct, correct5, seen = 0.0, 0, 0, 0
    # Validation batches match training's: on CPU, larger batches are slower per image
    # (Lite0, 1 thread: 19 ms/image at 4-16, 24 ms at 32) and would raise peak memory.
    rows = run.world.rows(len(labels))
    batches = [rows[i] for i in index_batches(len(rows), run.cfg.batch_size, shuffle=False)]
    with _gathered(inputs, batches) as gathered:
        for b, (idx, x) in enumerate(gathered):
            run.check_stop()
            y = labels[idx].to(run.device, non_blocking=True)
            with autocast(run.device, run.amp):
                logits = forward(x, False).float()
            if probs is not None:
                probs.append(logits.softmax(1).cpu())
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            top5 = logits.shape[1] > 5
            if top5:
                correct5 += (logits.topk(5, 1).indices == y[:, None]).any(1).sum().item()
            seen += len(idx)
            run.emit("batch", {"phase": "val", "epoch": epoch + 1, "epochs": run.cfg.epochs,
                               "batch": b + 1, "batches": len(batches)})
    if run.world.size > 1:
        total_loss, correct, correct5, seen = run.world.sum(total_loss, correct, correct5, seen)
        if probs is not None:
            probs[:] = [run.world.gather_rows(torch.cat(probs), len(labels))]
    out = {"val_loss": total_loss / seen, "val_acc": correct / seen}
    if top5:
        out["val_top5"] = correct5 / seen
    return out


# ---- the whole run ------------------------------------------------------------------------


def _features(run: _Run, model, source: DataSource, resize: int, crop: int, make_batch: BatchMaker, data=None):
    """Cached head inputs for both splits: from disk, or computed once (from `data` when the run
    has decoded it already) and stored."""
    precision = f"{run.device.type}-{run.amp or 'float32'}".replace("torch.", "")
    key = features.feature_key(run.spec, source.fingerprint, resize, crop,
                               features.backbone_digest(model, run.spec), precision)
    hit = features.load_cached(key)
    if run.world.size > 1 and run.world.sum(hit is None)[0] > 0:
        hit = None  # every rank reads the cache or every rank computes its share: never a mix
    if hit is not None:
        tensors, meta = hit
        run.emit("log", {"message": "feature cache hit: the frozen backbone's outputs are read, not computed"})
        return tensors, meta["skipped"], meta.get("val_index")
    run.emit("log", {"message": "backbone frozen and no augmentation: computing features once and caching them"})
    arrays = bool(source.train_items) and hasattr(source.train_items[0], "shape")  # built-in, small
    if data is None and arrays:
        data = _decode(run, source, resize)
    out, t0 = {}, time.perf_counter()
    skipped, val_index = (data.skipped, data.val.index) if data is not None else (list(source.skipped), None)
    for split in ("train", "val"):
        def progress(b, n, split=split):
            run.check_stop()
            run.emit("batch", {"phase": f"features ({split})", "epoch": 0, "epochs": run.cfg.epochs,
                               "batch": b + 1, "batches": n})
        x, y, lost = _split_features(run, model, source, data, split, resize, make_batch, progress)
        out[f"{split}_x"], out[f"{split}_y"] = x, y
        if lost is not None:  # streamed: files found unreadable on the way are dropped here
            skipped += lost[1]
            if split == "val" and len(lost[0]) < len(source.val_items):
                val_index = lost[0]
        if len(y) == 0:
            raise DataError(f"{source.name}: no readable images left in the {split} split")
    if data is None:
        n = len(out["train_y"]) + len(out["val_y"])
        run.emit("log", {"message": f"decoded {n} images and computed their features in {time.perf_counter() - t0:.1f} s, "
                                    "a few batches at a time (never all decoded at once)"})
        if len(skipped) > len(source.skipped):
            run.emit("log", {"message": f"skipped {count(len(skipped), 'file')} unreadable, e.g. {skipped[-1][1]}"})
    if run.world.is_main:
        features.save_cached(key, out, {"skipped": skipped, "val_index": val_index})
    return out, skipped, val_index


def _split_features(run: _Run, model, source: DataSource, data, split: str, resize: int, make_batch, progress):
    """(features, labels, None) of one split from decoded `data`; without it, streamed from the
    files: (features, labels, (kept item positions, [(name, reason)] of the unreadable ones)).

    Under torchrun each rank computes its own rows once and every rank gets them all.
    """
    if data is not None:
        part = getattr(data, split)
        n, labels, items = len(part), part.labels, None
        rows = run.world.rows(n)
        batches = ((pos, part.images[rows[pos]]) for pos in index_batches(len(rows), FEATURE_BATCH, shuffle=False))
    else:
        items = getattr(source, f"{split}_items")
        n, labels = len(items), torch.tensor(getattr(source, f"{split}_labels"), dtype=torch.long)
        rows, errors = run.world.rows(n), []
        # Decoded a few batches ahead of the model in threads: memory stays flat at any dataset size.
        batches = decoded_batches([items[i] for i in rows.tolist()], resize, FEATURE_BATCH, errors)
    mine, seen = features.extract_batches(model, run.spec, batches, len(rows), make_batch,
                                          -(-len(rows) // FEATURE_BATCH), progress, amp=run.amp)
    x = run.world.gather_rows(mine, n)
    if items is None:
        return x, labels, None
    ok = run.world.gather_rows(seen.to(torch.uint8), n).bool()
    keep = ok.nonzero().flatten()
    reasons = {int(rows[pos]): reason for pos, reason in errors}
    lost = [(Path(items[i]).name, reasons.get(i, f"{Path(items[i]).name}: unreadable (found by another process)"))
            for i in (~ok).nonzero().flatten().tolist()]
    if len(keep) == n:
        return x, labels, (list(range(n)), lost)
    return x[keep], labels[keep], (keep.tolist(), lost)


def _decode(run: _Run, source: DataSource, resize: int):
    t0 = time.perf_counter()
    data = source.decode(resize)
    run.emit("log", {"message": f"decoded {len(data.train) + len(data.val)} images once in "
                                f"{time.perf_counter() - t0:.1f} s; epochs reuse them"})
    if data.skipped:
        run.emit("log", {"message": f"skipped {count(len(data.skipped), 'file')} unreadable, e.g. {data.skipped[0][1]}"})
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
    device = pick_device(cfg.device)
    amp_dtype(device, cfg.precision, cfg.backbone)  # bf16 where the device has none: refused before any work
    spec = backbones.get_backbone(cfg.backbone)
    world = distributed.current()
    if cfg.batch_size < 2 * world.size:
        raise ValueError(f"batch size {cfg.batch_size} is the global batch over {world.size} processes: "
                         f"use at least {2 * world.size} (2 per process)")
    distributed.check_sync_bn(cfg.sync_bn, cfg.device, world.size)
    run = _Run(cfg, spec, device, emit, stop, torch.Generator().manual_seed(cfg.seed), world=world)
    resize, crop = spec.preprocessing(cfg.image_size)
    _check_fits(cfg, crop, device)

    data_seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
    source = resolve_data(cfg.data, val_fraction=cfg.val_fraction, subset=cfg.subset, seed=data_seed)
    for note in source.notes:
        emit("log", {"message": note})
    strategy = make_strategy(cfg.strategy, unfreeze_groups=cfg.unfreeze_groups, lr_factor=cfg.lr_factor,
                             head_epochs=cfg.head_epochs)
    pretrained = strategy.pretrained and spec.weights is not None
    if strategy.pretrained and spec.weights is None:
        emit("log", {"message": f"{spec.name} has no pretrained weights: it starts from random weights"})
    # The run's randomness is its own (rng.py): a seeded build, and dropout masks drawn from
    # a generator of the run, whatever other threads of the process draw meanwhile.
    model = backbones.build_model(cfg.backbone, len(source.class_names), pretrained=pretrained,
                                  head=cfg.head, hidden=cfg.hidden, seed=cfg.seed)
    if cfg.sync_bn:  # GPU only (check_sync_bn); before param_groups, which hold the layers
        model, converted = distributed.sync_batchnorm(model)
        emit("log", {"message": f"sync-bn: {converted} BatchNorm layers average their statistics over "
                                f"{world.size} processes while they train"})
    bind_generator(model, device_generator(device, cfg.seed + world.rank))  # ranks draw distinct masks
    groups = backbones.param_groups(model, cfg.backbone)
    opt = _optimizer(cfg, strategy.optimizer_groups(groups, cfg.lr))
    sched = _scheduler(cfg, opt)
    model.to(device, memory_format=memory_format(device, cfg.backbone))
    make_batch = BatchMaker(crop, spec.mean, spec.std, device, memory_format(device, cfg.backbone))
    # The head trains alone on cached backbone outputs in every epoch whose backbone is frozen (all
    # of feature extraction's, gradual's head epochs) when the inputs are deterministic; with the
    # frozen groups in eval mode (apply_train_mode) the full forward would compute the same.
    use_cache = cfg.feature_cache and cfg.augment == "none" and strategy.backbone_frozen(0)
    head_only = use_cache and all(strategy.backbone_frozen(e) for e in range(cfg.epochs))
    if cfg.augment != "none" and strategy.backbone_frozen(0):
        emit("log", {"message": "augmentation is on: no feature cache, the full backbone runs every epoch"})
    trainable = backbones.count_params(model, trainable_only=True)
    emit("started", {"device": str(device), "class_names": source.class_names,
                     "num_train": len(source.train_items), "num_val": len(source.val_items),
                     "trainable_params": trainable, "total_params": backbones.count_params(model),
                     "path": ("feature cache" if head_only else "feature cache, then full forward" if use_cache
                              else "full forward"),
                     "amp": str(run.amp).replace("torch.", "") if run.amp else "fp32"})

    head = backbones.get_module(model, spec.head)
    # What the training step calls: the model (the head alone on cached features), DDP-wrapped each
    # epoch under torchrun (distributed.World.wrap); evaluation always calls the bare module.
    train_net = head if use_cache else model
    augment = cfg.augment != "none"
    # Under torchrun, augmentation draws from a generator of the rank's own, so that
    # run.generator, which orders every epoch's batches, stays the same on all ranks.
    augment_generator = (run.generator if world.size == 1
                         else torch.Generator().manual_seed(cfg.seed + 7919 * (world.rank + 1)))

    def head_forward(x, train_mode):
        return (train_net if train_mode else head)(x).flatten(1)

    def full_forward(x, train_mode):
        batch = make_batch(x, augment=augment and train_mode, generator=augment_generator)
        return (train_net if train_mode else model)(batch)

    try:
        # Decoded images feed the epochs whose backbone trains; on a cache miss they feed the
        # feature extraction too (decoded once).
        data = None if head_only else _decode(run, source, resize)
        if use_cache:
            tensors, skipped, val_index = _features(run, model, source, resize, crop, make_batch, data)
            cached_splits = (tensors["train_x"].to(device), tensors["train_y"],
                             tensors["val_x"].to(device), tensors["val_y"])
        if data is not None:
            skipped, val_index = data.skipped, data.val.index
            # Batches are pinned one at a time on CUDA (BatchMaker): pinning the whole split
            # doubled its memory and did nothing, as indexing it returned pageable copies.
            image_splits = (data.train.images, data.train.labels, data.val.images, data.val.labels)
    except _StopNow:
        raise Cancelled(TrainResult({"epochs": 0, "seconds": time.perf_counter() - t_start}, None)) from None

    scaler = torch.amp.GradScaler("cuda") if run.amp == torch.float16 else None
    history: list[dict] = []
    best_acc, best_epoch, best_state, best_probs = -1.0, 0, None, None

    def summary() -> dict:
        return {
            "best_val_acc": best_acc if history else None, "best_epoch": best_epoch,
            "final_val_acc": history[-1]["val_acc"] if history else None, "epochs": len(history),
            "seconds": round(time.perf_counter() - t_start, 3), "trainable_params": trainable,
            "total_params": backbones.count_params(model), "skipped": len(skipped),
            "skipped_files": skipped[:20],
        }

    def val_results() -> dict | None:
        if best_probs is None:
            return None
        return _val_results(source, val_index, skipped, val_y, best_probs, best_epoch)

    try:
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            msg = strategy.on_epoch_start(epoch, groups)
            if msg:
                emit("log", {"message": msg})
            cached = use_cache and strategy.backbone_frozen(epoch)
            if use_cache and not cached and strategy.backbone_frozen(epoch - 1):
                emit("log", {"message": f"epoch {epoch + 1}: the backbone trains from here: full forward "
                                        "over the decoded images, the head keeps its trained weights"})
            apply_train_mode(model, groups)
            if cached:
                head.train()
            train_net = world.wrap(head if cached else model)
            (train_x, train_y, val_x, val_y), forward = ((cached_splits, head_forward) if cached
                                                         else (image_splits, full_forward))
            row = train_one_epoch(run, forward, train_x, train_y, opt, scaler, epoch)
            world.end_epoch(model, epoch)
            model.eval()
            probs: list[torch.Tensor] = []
            row |= evaluate(run, forward, val_x, val_y, epoch, probs)
            row |= {"epoch": epoch + 1, "lr": opt.param_groups[-1]["lr"],
                    "seconds": round(time.perf_counter() - t0, 3)}
            history.append(row)
            if row["val_acc"] > best_acc:
                best_acc, best_epoch = row["val_acc"], epoch + 1
                best_state = copy.deepcopy((head if head_only else model).state_dict())
                best_probs = torch.cat(probs)
            emit("epoch", row)
            if sched is not None:
                sched.step()
    except _StopNow:
        raise Cancelled(TrainResult(summary(), _full_state(model, head, best_state, head_only),
                                    val_results())) from None
    except torch.OutOfMemoryError:
        raise TrainingError(f"out of GPU memory at batch size {cfg.batch_size}, {crop} px: "
                            "use a smaller batch size or image size") from None
    except RuntimeError as exc:
        if "can't allocate memory" in str(exc) or "not enough memory" in str(exc):
            raise TrainingError(f"out of memory at batch size {cfg.batch_size}, {crop} px: "
                                "use a smaller batch size or image size") from None
        if world.lost_peer(exc):
            raise TrainingError(world.failure(exc)) from exc
        raise
    result = TrainResult(summary(), _full_state(model, head, best_state, head_only), val_results())
    if math.isnan(result.summary["best_val_acc"] or 0.0):
        raise TrainingError("validation accuracy is NaN: check the data")
    return result


def _val_results(source: DataSource, val_index, skipped, val_y: torch.Tensor, probs: torch.Tensor,
                 epoch: int) -> dict | None:
    """The val_results.json contract (runs.py): each validation image's label and probabilities."""
    index = _kept_rows(source, val_index, skipped, len(val_y))
    if index is None:
        return None
    arrays = bool(source.val_items) and hasattr(source.val_items[0], "shape")  # numpy rows, not paths
    items = [int(i) if arrays else str(source.val_items[i]) for i in index]
    return {"format": 1, "epoch": epoch, "classes": list(source.class_names), "items": items,
            "labels": val_y.tolist(), "probs": [[round(p, 6) for p in row] for row in probs.tolist()]}


def _kept_rows(source: DataSource, val_index, skipped, n: int) -> list[int] | None:
    """Which validation items the `n` rows are (unreadable files were dropped); None if unknown."""
    if val_index is not None:
        return list(val_index)
    if n == len(source.val_items):
        return list(range(n))
    # A feature cache entry written before rows were recorded: match the skipped file names.
    names = {entry[0] for entry in skipped}
    rows = [i for i, item in enumerate(source.val_items) if Path(item).name not in names]
    return rows if len(rows) == n else None


def _full_state(model: nn.Module, head: nn.Module, best_state, head_only: bool) -> dict | None:
    """The full model's weights at the best epoch (the head's best state folded in)."""
    if best_state is None:
        return None
    if head_only:
        head.load_state_dict(best_state)
    else:
        model.load_state_dict(best_state)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


# ---- train's own steps, for the LR finder (lr_find.py) ------------------------------------


def make_optimizer(cfg: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """The optimizer a run with `cfg` trains with, over per-group settings from a strategy."""
    return _optimizer(cfg, groups)


def cached_train_features(cfg: TrainConfig, model: nn.Module, source: DataSource, emit: Emit,
                          stop: threading.Event | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split's head inputs and labels from the feature cache (computed on a miss),
    exactly as a feature-extraction run of `cfg` gets them."""
    spec = backbones.get_backbone(cfg.backbone)
    device = next(model.parameters()).device
    run = _Run(cfg, spec, device, emit, stop or threading.Event(), torch.Generator().manual_seed(cfg.seed))
    resize, crop = spec.preprocessing(cfg.image_size)
    make_batch = BatchMaker(crop, spec.mean, spec.std, device, memory_format(device, cfg.backbone))
    try:
        tensors = _features(run, model, source, resize, crop, make_batch)[0]
    except _StopNow:
        raise Cancelled(TrainResult({"epochs": 0}, None)) from None
    return tensors["train_x"], tensors["train_y"]
