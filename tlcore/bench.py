"""The speed benchmark: `python -m tlcore.bench` (see bench/README.md).

In one process, on the same data, it times the PyTorch transfer-learning tutorial loop as
users write it against tlcore's own path (through the real `JobManager`), a floor (one
inference pass over the data), warm prediction and the peak memory of a fine-tuning run, then
prints a markdown table and each target with PASS/FAIL. The machine it was made for is a
shared 2-core CPU, so every row also says how busy other processes kept the machine.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from tlcore import backbones, paths
from tlcore import device as tl_device
from tlcore.config import TrainConfig
from tlcore.device import pick_device
from tlcore.jobs import JobManager

ROWS = {
    1: "baseline feature_extraction",
    2: "tlcore feature_extraction, cold cache",
    3: "tlcore feature_extraction, warm cache",
    4: "floor: one inference pass",
    5: "baseline finetune",
    6: "tlcore finetune",
    7: "predict, 1 image, warm",
    8: "peak RSS, finetune subprocess",
}
HYMENOPTERA = "hymenoptera_data"
GB = 2**30


# ---- measuring ----------------------------------------------------------------------------


def _busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Meter:
    """Wall and CPU seconds of a block, and the share of the machine other processes used."""

    wall: float = 0.0
    cpu: float = 0.0
    others: float | None = None  # 0..1 of all cores, busy with someone else's work

    def __enter__(self) -> Meter:
        self._t, self._c, self._b = time.perf_counter(), time.process_time(), _busy_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._t
        self.cpu = time.process_time() - self._c
        busy = _busy_seconds()
        if busy is not None and self._b is not None and self.wall > 0:
            others = (busy - self._b - self.cpu) / (self.wall * (os.cpu_count() or 1))
            self.others = min(1.0, max(0.0, others))


@dataclass
class Row:
    """One line of the results table."""

    key: int
    seconds: float | None = None
    images: int | None = None  # images pushed through the model (for images/s)
    best_val_acc: float | None = None
    epochs: int | None = None
    cpu: float | None = None
    others: float | None = None
    value: str = ""  # the measured quantity when it is not a duration (latency, memory)
    rss: int | None = None  # peak resident memory in bytes (row 8)
    notes: list[str] = field(default_factory=list)

    @property
    def per_epoch(self) -> float | None:
        return self.seconds / self.epochs if self.seconds and self.epochs else None

    def measured(self, meter: Meter) -> Row:
        self.seconds, self.cpu, self.others = meter.wall, meter.cpu, meter.others
        return self


# ---- data ---------------------------------------------------------------------------------


def find_hymenoptera() -> Path | None:
    """../shared/data/hymenoptera_data beside the repository or the working folder, if there."""
    for base in paths.shared_data_dirs():
        if (base / HYMENOPTERA / "train").is_dir():
            return base / HYMENOPTERA
    return None


def make_standin(root: Path, train_per_class: int, val_per_class: int, size: tuple[int, int],
                 seed: int = 0) -> Path:
    """Write a 2-class train/val folder of JPEGs a pretrained backbone can tell apart.

    Class `across` has stripes running left-right, `along` top-bottom, each image with its own
    colours, stripe width, slight tilt and noise, so the task is learnable but not trivial.
    """
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c, name in enumerate(("across", "along")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                tilt = rng.uniform(-0.25, 0.25)
                coord = (yy + tilt * xx) if c == 0 else (xx + tilt * yy)
                period = rng.uniform(0.03, 0.15) * min(w, h)
                wave = 0.5 + 0.5 * np.sin(2 * np.pi * coord / period + rng.uniform(0, 2 * np.pi))
                a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
                img = wave[..., None] * a + (1 - wave[..., None]) * b + rng.normal(0, 16, (h, w, 3))
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i:03d}.jpg", quality=90)
    return root


def folder_datasets(root: Path, resize: int, crop: int, mean, std) -> dict[str, datasets.ImageFolder]:
    """ImageFolder train/val with the tutorial's deterministic val transform for both splits."""
    tf = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop), transforms.ToTensor(),
                             transforms.Normalize(mean, std)])
    return {split: datasets.ImageFolder(str(root / split), tf) for split in ("train", "val")}


def pick_photo(root: Path, folder: Path) -> Path:
    """A 500x375 JPEG from the data, or a generated one written into `folder`."""
    for path in sorted(root.glob("*/*/*.jpg")):
        with Image.open(path) as img:
            if img.size == (500, 375):
                return path
    photo = folder / "photo.jpg"
    make_standin(folder / "photo", 1, 0, (500, 375))
    (folder / "photo" / "train" / "across" / "000.jpg").rename(photo)
    return photo


def set_allocator(mode: str) -> str:
    """Put the process's memory allocator in `mode` before any row runs; a line for the report.

    tlcore's `train` and `Predictor` raise glibc's mmap threshold (`tune_allocator`) so that
    activations are reused instead of page-faulted fresh each layer. That is a process-wide
    setting that cannot be undone, so it is either on for every row ("tuned") or off until
    tlcore's first run, with the baseline rows run before it ("default").
    """
    tune = getattr(tl_device, "tune_allocator", None)
    if tune is None:
        return "glibc defaults for every row (this tlcore does not tune the allocator)"
    if mode == "tuned":
        tune()
        return ("tuned for every row, baseline included (`tlcore.device.tune_allocator`: glibc mmap and "
                "trim thresholds raised, as tlcore's train and predict do), so rows compare loops, not allocators")
    return ("glibc defaults for the baseline rows and the floor, which run first; tlcore's train and predict "
            "tune it (`tlcore.device.tune_allocator`)")


def engine_version() -> str:
    """The commit of the code under test, and which engine files differ from it."""
    repo = Path(__file__).resolve().parent.parent

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=repo, capture_output=True, text=True, timeout=10,
                              check=True).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no", "--", "tlcore").splitlines()]
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"commit {commit}" + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")


# ---- the baseline: the PyTorch tutorial loop ----------------------------------------------


def tutorial_loop(model: nn.Module, loaders: dict[str, DataLoader], epochs: int, lr: float,
                  device: torch.device, frozen_bn_eval: bool = False) -> float:
    """`train_model` of the PyTorch transfer-learning tutorial; returns the best val accuracy.

    The optimizer covers the parameters that require grad (the head for feature extraction),
    Adam at `lr` as in tlcore's rows, with no LR schedule. `frozen_bn_eval` keeps frozen
    BatchNorms in eval mode while training (as tlcore does); the tutorial does not.
    """
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    best_acc, best_state = 0.0, copy.deepcopy(model.state_dict())
    for _epoch in range(epochs):
        for phase in ("train", "val"):
            model.train(phase == "train")  # as the tutorial: frozen BatchNorms in train mode too
            if frozen_bn_eval:
                for m in model.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.weight.requires_grad:
                        m.eval()
            running_loss, running_corrects = 0.0, 0
            for inputs, labels in loaders[phase]:
                inputs, labels = inputs.to(device), labels.to(device)
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_loss += loss.item() * inputs.size(0)
                running_corrects += (outputs.argmax(1) == labels).sum().item()
            acc = running_corrects / len(loaders[phase].dataset)
            if phase == "val" and acc > best_acc:
                best_acc, best_state = acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return best_acc


def baseline_model(backbone: str, num_classes: int, frozen: bool, device: torch.device) -> nn.Module:
    """tlcore's backbone with ImageNet weights and a new head; all but the head frozen if asked."""
    torch.manual_seed(0)  # same head initialisation as tlcore's runs (seed 0)
    model = backbones.build_model(backbone, num_classes)
    if frozen:
        head = backbones.get_module(model, backbones.get_backbone(backbone).head)
        for p in model.parameters():
            p.requires_grad = False
        for p in head.parameters():
            p.requires_grad = True
    return model.to(device)


def loaders_for(sets: dict, batch_size: int, workers: int) -> dict[str, DataLoader]:
    return {split: DataLoader(ds, batch_size=batch_size, shuffle=split == "train", num_workers=workers)
            for split, ds in sets.items()}


@torch.inference_mode()
def floor_pass(model: nn.Module, sets: dict, batch_size: int, workers: int, device: torch.device) -> int:
    """One eval-mode forward over train + val with the baseline's decode; returns the image count."""
    model.eval()
    n = 0
    for loader in loaders_for(sets, batch_size, workers).values():
        for inputs, _ in loader:
            model(inputs.to(device))
            n += len(inputs)
    return n


# ---- tlcore -------------------------------------------------------------------------------


def run_tlcore(manager: JobManager, cfg: TrainConfig) -> dict:
    """Submit a run, wait for it, and return its final snapshot; raise if it did not finish."""
    run_id = manager.submit(cfg)
    manager.wait(run_id)
    snap = manager.snapshot(run_id)
    if snap["status"] != "finished":
        raise RuntimeError(f"tlcore run {run_id} {snap['status']}: {snap.get('message')}")
    return snap


def predict_latency(backbone: str, photo: Path, device: str, calls: int) -> tuple[float, float, list[float]]:
    """(load seconds, median ms, all ms) of top-5 for one photo with a warm predictor."""
    from tlcore.predict import get_predictor

    t0 = time.perf_counter()
    predictor = get_predictor(backbone=backbone, device=device)
    load = time.perf_counter() - t0
    predictor.predict([photo], k=5)  # first call pays one-time kernel set-up, as the app's first click
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        predictor.predict([photo], k=5)
        times.append((time.perf_counter() - t0) * 1000)
    return load, statistics.median(times), times


def peak_rss(args: list[str], env: dict, log: Path) -> tuple[int, float, int]:
    """(peak RSS bytes, seconds, exit code) of `python -m tlcore <args>` in a child process.

    `os.wait4` gives the rusage of that one child, so nothing else this process started (or
    its own memory) counts.
    """
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tlcore", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return usage.ru_maxrss * scale, time.perf_counter() - t0, proc.returncode


# ---- the benchmark ------------------------------------------------------------------------


@dataclass
class Setup:
    """What every row shares."""

    data: Path
    data_note: str
    backbone: str
    image_size: int | None
    resize: int
    crop: int
    device: torch.device
    sets: dict
    work: Path
    args: argparse.Namespace

    def cfg(self, strategy: str, epochs: int, batch_size: int, **kw) -> TrainConfig:
        return TrainConfig(backbone=self.backbone, data=str(self.data), strategy=strategy, epochs=epochs,
                           batch_size=batch_size, lr=self.args.lr, optimizer="adam",
                           image_size=self.image_size, device=self.args.device, **kw)


def warm_up(setup: Setup) -> None:
    """Read every file once and run the model once, so no row pays first-touch costs."""
    for path in setup.data.rglob("*"):
        if path.is_file():
            path.read_bytes()
    model = baseline_model(setup.backbone, 2, frozen=False, device=setup.device)
    x = torch.randn(2, 3, setup.crop, setup.crop, device=setup.device)
    model.train()
    model(x).sum().backward()
    with torch.inference_mode():
        model.eval()(x)


def _row_baseline(setup: Setup, key: int, frozen: bool, epochs: int, log) -> Row:
    a = setup.args
    log(f"[{key}] {ROWS[key]}: {epochs} epochs, batch {a.batch_size_baseline}")
    model = baseline_model(setup.backbone, len(setup.sets["train"].classes), frozen, setup.device)
    loaders = loaders_for(setup.sets, a.batch_size_baseline, a.workers)
    with Meter() as m:
        acc = tutorial_loop(model, loaders, epochs, a.lr, setup.device, frozen and a.baseline_bn == "eval")
    n = len(setup.sets["train"]) + len(setup.sets["val"])
    row = Row(key, images=n * epochs, best_val_acc=acc, epochs=epochs).measured(m)
    bn = f"; frozen BatchNorms in {a.baseline_bn} mode while training" if frozen else ""
    row.notes.append(f"{'head only' if frozen else 'all layers'}; full forward every epoch{bn}; "
                     f"DataLoader workers={a.workers}")
    return row


def _row_floor(setup: Setup, log) -> Row:
    a = setup.args
    log(f"[4] {ROWS[4]} over train + val, batch {a.batch_size_floor}")
    model = baseline_model(setup.backbone, len(setup.sets["train"].classes), True, setup.device)
    with Meter() as m:
        n = floor_pass(model, setup.sets, a.batch_size_floor, a.workers, setup.device)
    row = Row(4, images=n).measured(m)
    row.notes.append(f"eval + inference_mode, batch {a.batch_size_floor}, the baseline's decode")
    return row


def _row_tlcore(setup: Setup, manager: JobManager, key: int, log) -> Row:
    a = setup.args
    if key == 6:
        cfg = setup.cfg("finetune", a.epochs_ft, a.batch_size_baseline)
    else:
        cfg = setup.cfg("feature_extraction", a.epochs_fe, a.batch_size_fe)
        if key == 3:
            cfg.lr = a.lr * 2  # another try at a new learning rate: the case the cache is for
    log(f"[{key}] {ROWS[key]}: {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr:g}")
    with Meter() as m:
        snap = run_tlcore(manager, cfg)
    row = Row(key, best_val_acc=snap["best_val_acc"], epochs=snap["epochs"]).measured(m)
    row.images = (snap["num_train"] + snap["num_val"]) * snap["epochs"]
    in_loop = statistics.mean(r["seconds"] for r in snap["metrics"])
    row.notes.append(f"{snap['path']}; {snap['num_train']}+{snap['num_val']} images; "
                     f"{in_loop:.2f} s per epoch inside the loop")
    if key == 3:
        row.notes.append(f"lr {cfg.lr:g}" + ("" if any("cache hit" in x for x in snap["log"]) else "; NO cache hit"))
    return row


def _row_predict(setup: Setup, log) -> Row:
    a = setup.args
    photo = pick_photo(setup.data, setup.work)
    log(f"[7] {ROWS[7]}: {a.predict_calls} calls on {photo.name}")
    with Meter() as m:
        load, median, _ = predict_latency(setup.backbone, photo, a.device, a.predict_calls)
    row = Row(7, value=f"{median:.0f} ms median").measured(m)
    row.seconds, row.images = median / 1000, 1
    with Image.open(photo) as img:
        size = f"{img.size[0]}x{img.size[1]}"
    row.notes.append(f"{size} JPEG to top-5 ImageNet classes; median of {a.predict_calls} calls; "
                     f"first load {load:.1f} s")
    return row


def _row_peak_rss(setup: Setup, log) -> Row:
    a = setup.args
    cli = ["train", "--backbone", setup.backbone, "--strategy", "finetune", "--data", str(setup.data),
           "--epochs", "1", "--batch-size", str(a.batch_size_memory), "--device", a.device,
           "--runs-dir", str(setup.work / "runs-rss")]
    if setup.image_size:
        cli += ["--image-size", str(setup.image_size)]
    log(f"[8] {ROWS[8]}: python -m tlcore {' '.join(cli)}")
    env = {**os.environ, "TLCORE_CACHE": str(setup.work / "cache-rss")}
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)
    rss, seconds, code = peak_rss(cli, env, setup.work / "rss.log")
    if code != 0:
        raise RuntimeError(f"the finetune child failed ({code}):\n{(setup.work / 'rss.log').read_text()[-2000:]}")
    row = Row(8, value=f"{rss / GB:.2f} GB", rss=rss)
    default = " (tlcore's default)" if a.batch_size_memory == TrainConfig().batch_size else ""
    row.notes.append(f"`python -m tlcore train --strategy finetune --epochs 1 --batch-size {a.batch_size_memory}`{default}; "
                     f"the child ran {seconds:.0f} s (not compared)")
    return row


def run_order(allocator: str) -> tuple[int, ...]:
    """Rows in the order they run: pairs compared with each other back to back.

    With the default allocator, the baseline rows go first: tlcore's first run tunes the
    process's allocator for good, and the rows after it would get that for free.
    """
    if allocator == "default":
        return (1, 4, 5, 2, 3, 6, 7, 8)
    return (1, 4, 2, 3, 5, 6, 7, 8)


def bench_rows(setup: Setup, wanted: set[int], log: Callable[[str], None]) -> dict[int, Row]:
    """Run the wanted rows in `run_order`; row 3 needs row 2's cache, so 2 runs for it anyway."""
    manager = JobManager(setup.work / "runs")
    a, rows = setup.args, {}
    for key in run_order(a.allocator):
        if key == 2 and 3 in wanted and 2 not in wanted:
            _row_tlcore(setup, manager, 2, log)  # fills the cache, not reported
        if key not in wanted:
            continue
        if key in (1, 5):
            rows[key] = _row_baseline(setup, key, key == 1, a.epochs_fe if key == 1 else a.epochs_ft, log)
        elif key == 4:
            rows[key] = _row_floor(setup, log)
        elif key in (2, 3, 6):
            rows[key] = _row_tlcore(setup, manager, key, log)
        elif key == 7:
            rows[key] = _row_predict(setup, log)
        else:
            rows[key] = _row_peak_rss(setup, log)
    return rows


# ---- threads and workers ------------------------------------------------------------------


def study_threads(setup: Setup, log: Callable[[str], None], repeats: int = 2) -> str:
    """Markdown: torch threads 1 vs 2 x DataLoader workers / decode threads, same work each time.

    Each setting runs `repeats` times, interleaved with the others so that a burst of load
    from other processes hits them alike; the table keeps the fastest run of each.
    """
    from torch.utils.data import Subset

    from tlcore.batches import BatchMaker
    from tlcore.data import resolve_data
    from tlcore.features import extract_features

    n = min(64, len(setup.sets["train"]))
    subset = {"train": Subset(setup.sets["train"], range(n))}
    source = resolve_data(str(setup.data))
    spec = backbones.get_backbone(setup.backbone)
    model = baseline_model(setup.backbone, len(setup.sets["train"].classes), frozen=True, device=setup.device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    decoded = source.decode(setup.resize)
    make_batch = BatchMaker(setup.crop, spec.mean, spec.std, setup.device)

    def baseline_epoch(workers: int) -> None:
        model.train()
        for x, y in DataLoader(subset["train"], batch_size=4, shuffle=True, num_workers=workers):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x.to(setup.device)), y.to(setup.device)).backward()
            opt.step()

    cases: list[tuple[str, Callable[[], None]]] = []
    for w in (0, 2):
        cases.append((f"baseline feature_extraction epoch, {n} images, DataLoader workers={w}",
                      lambda w=w: baseline_epoch(w)))
    for w in (1, 2, 4):
        cases.append((f"tlcore decode, {source.num_images} images, decode threads={w}",
                      lambda w=w: source.decode(setup.resize, workers=w)))
    for bs in (4, 16, 64):
        cases.append((f"frozen forward (extract_features), {n} images, batch {bs}",
                      lambda bs=bs: extract_features(model, spec, decoded.train.images[:n], make_batch, bs)))
    best: dict[tuple[str, int], Meter] = {}
    previous = torch.get_num_threads()
    try:
        for rep in range(repeats):
            for threads in (1, 2) if rep % 2 == 0 else (2, 1):
                torch.set_num_threads(threads)
                for name, work in cases:
                    with Meter() as m:
                        work()
                    log(f"study: {threads} torch threads, {name}: {m.wall:.2f} s")
                    if (name, threads) not in best or m.wall < best[name, threads].wall:
                        best[name, threads] = m
    finally:
        torch.set_num_threads(previous)
    lines = ["| work | 1 torch thread | 2 torch threads |", "|---|---:|---:|"]
    for name, _ in cases:
        cells = [f"{best[name, t].wall:.2f} s ({(best[name, t].others or 0) * 100:.0f}% others)" for t in (1, 2)]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


# ---- the report ---------------------------------------------------------------------------


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def ratio_base(key: int) -> int:
    """The baseline row a row is compared with."""
    return 5 if key in (5, 6) else 1


def render_table(rows: dict[int, Row]) -> str:
    lines = ["| # | method | seconds | images/s | best val acc | ratio to baseline | s/epoch | CPU s "
             "| others' load | notes |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for key, name in ROWS.items():
        row = rows.get(key)
        if row is None:
            lines.append(f"| {key} | {name} | skipped | | | | | | | |")
            continue
        base = rows.get(ratio_base(key))
        ratio = row.seconds / base.seconds if key not in (7, 8) and base and base.seconds and row.seconds else None
        ips = row.images / row.seconds if row.images and row.seconds else None
        seconds = row.value or _fmt(row.seconds, ".1f")
        lines.append(
            f"| {key} | {name} | {seconds} | {_fmt(ips, '.1f')} | {_fmt(row.best_val_acc, '.4f')} "
            f"| {_fmt(ratio, '.3f')} | {_fmt(row.per_epoch, '.1f')} | {_fmt(row.cpu, '.1f')} "
            f"| {_fmt(row.others and row.others * 100, '.0f')}{'%' if row.others is not None else ''} "
            f"| {'; '.join(row.notes)} |")
    return "\n".join(lines)


@dataclass
class Target:
    name: str
    measured: str
    ok: bool | None  # None: a row it needs was skipped


def targets(rows: dict[int, Row], acc_tolerance: float = 0.015) -> list[Target]:
    """Each target with its measured value and verdict."""
    r = rows.get
    out = []

    def add(name: str, need: tuple[int, ...], measure: Callable[[], tuple[str, bool]]) -> None:
        if all(r(k) is not None for k in need):
            out.append(Target(name, *measure()))
        else:
            out.append(Target(name, "rows skipped", None))

    add("[2] cold feature_extraction at least 10x faster than the tutorial loop [1]", (1, 2),
        lambda: (f"{r(1).seconds / r(2).seconds:.1f}x ({r(1).seconds:.1f} s / {r(2).seconds:.1f} s)",
                 r(1).seconds >= 10 * r(2).seconds))
    add("[3] warm-cache run <= 10% of the cold run's time", (2, 3),
        lambda: (f"{r(3).seconds / r(2).seconds:.1%} ({r(3).seconds:.1f} s / {r(2).seconds:.1f} s)",
                 r(3).seconds <= 0.10 * r(2).seconds))
    add("[2] cold feature_extraction <= 1.5x the floor", (2, 4),
        lambda: (f"{r(2).seconds / r(4).seconds:.2f}x ({r(2).seconds:.1f} s / {r(4).seconds:.1f} s)",
                 r(2).seconds <= 1.5 * r(4).seconds))
    add("[6] tlcore finetune s/epoch <= baseline's (batch 4)", (5, 6),
        lambda: (f"{r(6).per_epoch:.1f} s vs {r(5).per_epoch:.1f} s ({r(6).per_epoch / r(5).per_epoch:.2f}x)",
                 r(6).per_epoch <= r(5).per_epoch))
    add("[7] warm predict median < 100 ms", (7,), lambda: (r(7).value, r(7).seconds < 0.100))
    add("[8] finetune peak RSS < 3 GB", (8,), lambda: (r(8).value, r(8).rss < 3 * GB))
    def accuracy() -> tuple[str, bool]:
        gap = r(2).best_val_acc - r(1).best_val_acc
        text = f"{r(2).best_val_acc:.4f} vs {r(1).best_val_acc:.4f} ({gap * 100:+.1f} points)"
        if gap > acc_tolerance:
            text += ("; tlcore higher: with BatchNorm in train mode (the tutorial's model.train()) the frozen "
                     "backbone is not frozen; `--baseline-bn eval` compares like with like")
        return text, abs(gap) <= acc_tolerance + 1e-9

    add(f"[2] vs [1] val accuracy within {acc_tolerance * 100:.1f} points", (1, 2), accuracy)
    return out


def render_targets(items: list[Target]) -> str:
    lines = ["| target | measured | result |", "|---|---|---|"]
    for t in items:
        verdict = "n/a" if t.ok is None else ("PASS" if t.ok else "FAIL")
        lines.append(f"| {t.name} | {t.measured} | {verdict} |")
    return "\n".join(lines)


def machine_description(device: torch.device, engine: str) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    return "\n".join([
        f"- CPU: {cpu}, {os.cpu_count()} cores ({usable} usable by this process)",
        f"- torch {torch.__version__}, torchvision {torchvision.__version__}, Python {platform.python_version()}, "
        f"{torch.get_num_threads()} torch threads",
        f"- device: {device}",
        f"- tlcore: {engine} (at the start of the run)",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- load average at the end: {', '.join(f'{x:.2f}' for x in load)}",
    ])


def render_report(setup: Setup, rows: dict[int, Row], command: str, total: float, allocator: str,
                  engine: str) -> str:
    a = setup.args
    parts = [
        f"# tlcore speed benchmark{' (quick mode: not a measurement)' if a.quick else ''}",
        "",
        f"`{command}` — {total / 60:.1f} min in all.",
        "",
        f"- data: {setup.data_note}",
        f"- backbone: {setup.backbone} with ImageNet weights, inputs {setup.crop} px (resize {setup.resize}); "
        f"Adam lr {a.lr:g} on the same new head in every run; seed 0",
        f"- inputs: deterministic for every row (Resize({setup.resize}) + CenterCrop({setup.crop}) in the "
        "baseline, the tutorial's *val* transform, for train too), because tlcore's feature cache needs "
        "deterministic inputs; no RandomResizedCrop/flip anywhere",
        f"- feature_extraction: {a.epochs_fe} epochs; baseline batch {a.batch_size_baseline}, tlcore batch "
        f"{a.batch_size_fe}. finetune: {a.epochs_ft} epochs, batch {a.batch_size_baseline} for both",
        f"- allocator: {allocator}; baseline DataLoader workers={a.workers}; rows ran in the order "
        f"{', '.join(str(k) for k in run_order(a.allocator))}",
        "- seconds: wall clock around the whole run (tlcore: submit to finished, through JobManager, "
        "decode and saving included); s/epoch = seconds / epochs; CPU s: this process's CPU time; "
        "others' load: share of all cores used by other processes during the row",
        "",
        render_table(rows),
        "",
        "## Targets",
        "",
        render_targets(targets(rows)),
        "",
        "## Machine",
        "",
        machine_description(setup.device, engine),
        "",
    ]
    return "\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tlcore.bench",
                                description="tlcore vs the PyTorch tutorial loop, side by side in one process.")
    p.add_argument("--data", default=None,
                   help="train/val image folder (default: ../shared/data/hymenoptera_data if present, else generated)")
    p.add_argument("--backbone", default="efficientnet_lite0", choices=backbones.list_backbones())
    p.add_argument("--epochs-fe", type=int, default=15)
    p.add_argument("--epochs-ft", type=int, default=3)
    p.add_argument("--batch-size-baseline", type=int, default=4)
    p.add_argument("--batch-size-fe", type=int, default=4, help="tlcore feature_extraction batch (head training)")
    p.add_argument("--batch-size-floor", type=int, default=16, help="16: fastest per image on CPU (see README)")
    p.add_argument("--batch-size-memory", type=int, default=TrainConfig().batch_size,
                   help="row 8's batch size (default: tlcore's own default)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--workers", type=int, default=0, help="baseline DataLoader workers (0 measured fastest here)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--baseline-bn", default="train", choices=("train", "eval"),
                   help="row 1's frozen BatchNorms while training: train (the tutorial's model.train()) or eval "
                        "(truly frozen, as tlcore)")
    p.add_argument("--allocator", default="tuned", choices=("tuned", "default"),
                   help="tuned: every row runs with tlcore's allocator setting (default); default: baseline rows "
                        "first, with glibc's defaults")
    p.add_argument("--image-size", type=int, default=None, help="input size (default: the backbone's)")
    p.add_argument("--predict-calls", type=int, default=30)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--rows", default="1,2,3,4,5,6,7,8", help="comma-separated row numbers to run")
    p.add_argument("--quick", action="store_true",
                   help="tiny generated data, 64 px, 2 epochs: checks the benchmark runs, measures nothing")
    p.add_argument("--study-threads", action="store_true",
                   help="instead of the table: time torch threads 1 vs 2 x DataLoader workers / decode threads")
    p.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    return p


def _quick_defaults(args: argparse.Namespace) -> None:
    args.epochs_fe, args.epochs_ft = 2, 1
    args.image_size = args.image_size or 64
    args.predict_calls = min(args.predict_calls, 3)
    args.batch_size_memory = min(args.batch_size_memory, 8)
    # One thread: on a busy shared CPU, two OpenMP threads can stall each other many times over.
    args.threads = args.threads or 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        _quick_defaults(args)
    try:
        wanted = {int(k) for k in args.rows.split(",") if k.strip()}
    except ValueError:
        print(f"--rows: comma-separated numbers from {min(ROWS)} to {max(ROWS)}, got {args.rows!r}", file=sys.stderr)
        return 2
    if not wanted <= set(ROWS):
        print(f"--rows: unknown rows {sorted(wanted - set(ROWS))}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = engine_version()
    command = "python -m tlcore.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    t_start = time.perf_counter()

    def log(message: str) -> None:
        print(f"{time.perf_counter() - t_start:7.1f}s  {message}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="tlcore-bench-") as tmp:
        work = Path(tmp)
        old_cache = os.environ.get("TLCORE_CACHE")
        os.environ["TLCORE_CACHE"] = str(work / "cache")  # a cold feature cache for row 2
        try:
            allocator = set_allocator(args.allocator)
            setup = _setup(args, work)
            log(f"data: {setup.data_note}")
            warm_up(setup)
            if args.study_threads:
                print(f"allocator: {allocator}\n\n{study_threads(setup, log)}")
                return 0
            rows = bench_rows(setup, wanted, log)
        finally:
            if old_cache is None:
                os.environ.pop("TLCORE_CACHE", None)
            else:
                os.environ["TLCORE_CACHE"] = old_cache
        report = render_report(setup, rows, command, time.perf_counter() - t_start, allocator, engine)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return 0


def _setup(args: argparse.Namespace, work: Path) -> Setup:
    shared = find_hymenoptera()
    if args.data:
        data = Path(args.data).expanduser().resolve()
        note = f"{data}"
    elif shared is not None and not args.quick:
        data, note = shared.resolve(), f"{HYMENOPTERA} (the tutorial's ants/bees), {shared.resolve()}"
    elif args.quick:
        data = make_standin(work / "standin", 6, 3, (96, 72))
        note = "generated stand-in: 2 classes of striped JPEGs, 6 train + 3 val per class, 96x72"
    else:
        data = make_standin(work / "standin", 60, 30, (500, 375))
        note = (f"generated stand-in (no {HYMENOPTERA} found): 2 classes of striped JPEGs, "
                "60 train + 30 val per class, 500x375")
    if not (data / "train").is_dir() or not (data / "val").is_dir():
        raise SystemExit(f"--data {data}: needs train/ and val/ folders of class folders (the tutorial layout)")
    spec = backbones.get_backbone(args.backbone)
    resize, crop = spec.preprocessing(args.image_size)
    sets = folder_datasets(data, resize, crop, spec.mean, spec.std)
    note += f"; baseline sees {len(sets['train'])} train + {len(sets['val'])} val images (ImageFolder)"
    return Setup(data, note, args.backbone, args.image_size, resize, crop, pick_device(args.device), sets,
                 work, args)


if __name__ == "__main__":
    sys.exit(main())
