"""Each benchmark row: baseline, tlcore, floor, prediction and memory, and the thread study."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from tlcore.bench.baseline import baseline_model, floor_pass, loaders_for, tutorial_loop
from tlcore.bench.common import GB, ROWS
from tlcore.bench.inputs import pick_photo
from tlcore.bench.measure import Meter, Row
from tlcore.models import backbones
from tlcore.training.config import TrainConfig
from tlcore.training.jobs import JobManager

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

    from tlcore.data.batches import BatchMaker
    from tlcore.data.sources import resolve_data
    from tlcore.training.features import extract_features

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


