"""`python -m tlcore.bench.scaling`: how cost grows with the dataset (1,000 to 20,000 JPEGs).

It writes class folders of generated 300x300 JPEGs whose content depends on the class (stripes
whose direction is the class, random colours, period and phase, plus noise: a linear head on
frozen features learns it, chance is 1/3), once, into a folder it reuses. Each size is a
folder of hard links to the first images of the largest one. Then, for each size, it runs in a
child process, with the default memory budget and a fresh feature cache:

- a feature-extraction run (`tlcore.training.train.train`, the path the CLI and the app take): wall time
  per image (the whole child, imports included, and the extraction phase alone), peak RSS
  (`os.wait4` of that child), the disk its spill files and its feature cache took, and whether
  any spill file is left behind;
- with `--finetune`, a fine-tuning run stopped after `--batches` training batches: training
  images/s (batches after the first two), peak RSS, spill disk.

The spill files are private and unlinked as soon as they are open, so `du` never sees them: a
thread of this process reads the child's open files (`/proc/PID/fd`, `/proc/PID/maps`) every
0.2 s and keeps the largest total size of those in the spill folder.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tlcore.bench.common import GB
from tlcore.bench.measure import Meter

CLASSES = ("horizontal", "vertical", "diagonal")
SIZES = (1000, 5000, 20000)
SIDE = 300


# ---- the data -----------------------------------------------------------------------------


@functools.cache
def _coords(side: int) -> tuple[np.ndarray, ...]:
    """Each class's stripe coordinate: rows, columns, the diagonal."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    return yy, xx, (xx + yy) / np.float32(np.sqrt(2))


def stripe_image(label: int, index: int, side: int = SIDE) -> np.ndarray:
    """One (side, side, 3) uint8 picture of class `label`: its stripes' direction is the class."""
    rng = np.random.default_rng([label, index])
    coord = _coords(side)[label]
    period, phase = rng.uniform(14, 40), rng.uniform(0, 2 * np.pi)
    wave = (np.sin(coord * (2 * np.pi / period) + phase) > 0)[..., None]
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    img = np.where(wave, a, b).astype(np.int16) + rng.integers(-60, 61, (side, side, 3), dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def _class_count(n: int, label: int) -> int:
    """Images of class `label` in a folder of n (the first classes take the remainder)."""
    return n // len(CLASSES) + (label < n % len(CLASSES))


def _fill(folder: Path, n: int, write) -> None:
    """Give `folder` its `n` images (`write(class, i, path)` makes one), unless already complete."""
    if (folder / ".complete").is_file():
        return
    for c, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(_class_count(n, c)):
            path = folder / name / f"{i:05d}.jpg"
            if not path.exists():  # a generation cut short goes on where it stopped
                write(c, i, path)
    (folder / ".complete").write_text(str(n))


def make_folders(root: Path, sizes=SIZES) -> dict[int, Path]:
    """`root/n<size>/<class>/` for each size (reused when complete); returns size -> folder."""
    from PIL import Image

    biggest = max(sizes)
    full = root / f"n{biggest}"
    _fill(full, biggest, lambda c, i, path: Image.fromarray(stripe_image(c, i)).save(path, quality=85))
    out = {biggest: full}
    for n in sorted(set(sizes) - {biggest}):
        folder = root / f"n{n}"
        _fill(folder, n, lambda c, i, path: os.link(full / CLASSES[c] / path.name, path))  # the big folder's files
        out[n] = folder
    return out


# ---- watching a child ---------------------------------------------------------------------


def spill_bytes(pid: int, spill: Path) -> int:
    """Bytes on disk of the files in `spill` that process `pid` holds open or mapped (unlinked ones too)."""
    seen: dict[tuple[int, int], int] = {}
    prefix = str(spill) + "/"
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix):
                    st = os.stat(f"/proc/{pid}/fd/{fd}")
                    seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
            except OSError:
                continue
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].startswith(prefix):
                    lo, hi = (int(v, 16) for v in parts[0].split("-"))
                    inode = int(parts[4])
                    seen[(-1, inode)] = max(seen.get((-1, inode), 0), hi - lo)
    except OSError:
        pass  # the child has exited
    by_inode: dict[int, int] = {}
    for (_, inode), size in seen.items():  # an fd and a mapping of one file count once
        by_inode[inode] = max(by_inode.get(inode, 0), size)
    return sum(by_inode.values())


def run_child(args: list[str], env: dict, spill: Path, log: Path) -> dict:
    """Run `python -m tlcore.bench.scaling <args>`; its JSON result plus wall, peak RSS, peak spill."""
    peak = [0]
    with open(log, "w") as out, Meter() as meter:
        proc = subprocess.Popen([sys.executable, "-m", "tlcore.bench.scaling", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def watch():
            while not done.wait(0.2):
                peak[0] = max(peak[0], spill_bytes(proc.pid, spill))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        watcher.join()
    code = os.waitstatus_to_exitcode(status)
    lines = log.read_text().splitlines()
    if code != 0 or not lines or not lines[-1].startswith("{"):
        raise RuntimeError(f"the child failed ({code}):\n" + "\n".join(lines[-30:]))
    result = json.loads(lines[-1])
    return {**result, "wall": meter.wall, "others": meter.others, "peak_rss": usage.ru_maxrss * 1024,
            "child_cpu": usage.ru_utime + usage.ru_stime,
            "spill_peak": peak[0]}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


# ---- the child ----------------------------------------------------------------------------


def child(kind: str, data: str, batches: int, image_size: int | None, prefetch: int | None = None) -> dict:
    """One run in this process; returns its phase timings (printed as the last line)."""
    import threading as th

    from tlcore.training import train as tltrain
    from tlcore.training.config import TrainConfig
    from tlcore.training.train import Cancelled, train

    if prefetch is not None:
        tltrain.PREFETCH = prefetch

    stamps: dict[str, float] = {}
    train_batches: list[float] = []
    stop = th.Event()
    t0, c0 = time.perf_counter(), time.process_time()

    def emit(event: str, payload: dict) -> None:
        now = time.perf_counter() - t0
        if event == "batch" and payload["phase"].startswith("features"):
            stamps.setdefault("features_first", now)
            stamps["features_last"] = now
        elif event == "batch" and payload["phase"] == "train":
            train_batches.append(now)
            if kind == "finetune" and len(train_batches) >= batches:
                stop.set()
        elif event == "started":
            stamps["started"] = now

    if kind == "features":
        cfg = TrainConfig(data=data, strategy="feature_extraction", epochs=2, image_size=image_size)
    else:
        cfg = TrainConfig(data=data, strategy="finetune", epochs=1, image_size=image_size)
    try:
        result = train(cfg, emit, stop)
        summary = result.summary
    except Cancelled as exc:
        summary = exc.result.summary
    out = {"kind": kind, "prefetch": tltrain.PREFETCH, "run_seconds": time.perf_counter() - t0,
           "run_cpu": time.process_time() - c0, **stamps,
           "best_val_acc": summary.get("best_val_acc"), "skipped": summary.get("skipped")}
    if kind == "finetune" and len(train_batches) > 3:
        # The first batches pay for warm-up (allocator, first touch); the rest is the steady rate.
        steady = train_batches[2:]
        out["train_images_per_s"] = cfg.batch_size * (len(steady) - 1) / (steady[-1] - steady[0])
        out["first_train_batch"] = train_batches[0]
    return out


# ---- the benchmark ------------------------------------------------------------------------


def measure(folders: dict[int, Path], kind: str, batches: int, image_size: int | None, work: Path,
            prefetch: int | None = None) -> list[dict]:
    rows = []
    for n, folder in sorted(folders.items()):
        cache = work / f"cache-{kind}-{n}"
        env = {**os.environ, "TLCORE_CACHE": str(cache), "TLCORE_THREADS": os.environ.get("TLCORE_THREADS", "1")}
        args = ["--child", kind, "--data", str(folder), "--batches", str(batches)]
        if image_size:
            args += ["--image-size", str(image_size)]
        if prefetch is not None:
            args += ["--prefetch", str(prefetch)]
        print(f"{kind} on {n} images ...", file=sys.stderr, flush=True)
        row = run_child(args, env, cache / "spill", work / f"{kind}-{n}-{prefetch}.log")
        left = [p.name for p in (cache / "spill").iterdir()] if (cache / "spill").is_dir() else []
        row |= {"n": n, "features_bytes": folder_bytes(cache / "features"), "spill_left": left}
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def render(rows: list[dict]) -> str:
    """Markdown tables of the rows; ratios are to the smallest size's figure."""
    lines = []
    feats = [r for r in rows if r["kind"] == "features"]
    if feats:
        base = feats[0]["run_seconds"] / feats[0]["n"]
        base_cpu = feats[0].get("run_cpu", 0) / feats[0]["n"]
        lines += ["| images | run ms/image | vs smallest | run CPU ms/image | vs smallest | extraction ms/image | "
                  "child wall s (imports incl.) | peak RSS | spill disk (peak) | feature cache | spill files left | "
                  "best val acc | others' load |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
        for r in feats:
            per, cpu = r["run_seconds"] / r["n"], r.get("run_cpu", 0) / r["n"]
            extract = (r["features_last"] - r["features_first"]) / r["n"] * 1000
            cpu_cols = f"{cpu * 1000:.1f} | {cpu / base_cpu:.2f}x" if cpu and base_cpu else "- | -"
            lines.append(f"| {r['n']:,} | {per * 1000:.1f} | {per / base:.2f}x | {cpu_cols} | {extract:.1f} | "
                         f"{r['wall']:.0f} | {r['peak_rss'] / GB:.2f} GB | {r['spill_peak'] / 2**20:.0f} MB | "
                         f"{r['features_bytes'] / 2**20:.1f} MB | {len(r['spill_left']) or 'none'} | "
                         f"{r['best_val_acc']:.4f} | {(r['others'] or 0):.0%} |")
    tune = [r for r in rows if r["kind"] == "finetune"]
    if tune:
        base = tune[0].get("train_images_per_s")
        lines += ["", "| images | prefetch | first training batch at (s) | training images/s | vs smallest | peak RSS | "
                  "spill disk (peak) | spill files left | others' load |", "|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
        for r in tune:
            rate = r.get("train_images_per_s")
            shown = f"{rate:.1f} | {rate / base:.2f}x" if rate and base else "- | -"
            lines.append(f"| {r['n']:,} | {r['prefetch']} | {r.get('first_train_batch', 0):.0f} | {shown} | "
                         f"{r['peak_rss'] / GB:.2f} GB | {r['spill_peak'] / 2**20:.0f} MB | "
                         f"{len(r['spill_left']) or 'none'} | {(r['others'] or 0):.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tlcore.bench.scaling", description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=Path(tempfile.gettempdir()) / "tlcore-scaling",
                   help="where the generated folders are written and reused (default: $TMPDIR/tlcore-scaling)")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma list of folder sizes (default 1000,5000,20000)")
    p.add_argument("--no-features", action="store_true", help="skip the feature-extraction runs")
    p.add_argument("--finetune", action="store_true", help="also time fine-tuning batches on each size")
    p.add_argument("--batches", type=int, default=40, help="fine-tuning batches to run before stopping (default 40)")
    p.add_argument("--image-size", type=int, default=None, help="input size (default: the backbone's, 224)")
    p.add_argument("--prefetch", type=int, default=None,
                   help="training batches gathered ahead (default: tlcore.training.train.PREFETCH; 0: none)")
    p.add_argument("--json", type=Path, default=None, help="also write every measured row to this file")
    p.add_argument("--child", choices=("features", "finetune"), help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.data, args.batches, args.image_size, args.prefetch)), flush=True)
        return 0
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",")})
    except ValueError:
        p.error(f"--sizes must be a comma list of whole numbers, got {args.sizes!r}")
    if sizes[0] < 2 * len(CLASSES):
        p.error(f"--sizes: each size must be at least {2 * len(CLASSES)} images")
    t0 = time.perf_counter()
    folders = make_folders(args.data_root, sizes)
    print(f"data ready in {time.perf_counter() - t0:.0f} s: {args.data_root}", file=sys.stderr, flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tlcore-scaling-") as tmp:
        if not args.no_features:
            rows += measure(folders, "features", args.batches, args.image_size, Path(tmp))
        if args.finetune:
            rows += measure(folders, "finetune", args.batches, args.image_size, Path(tmp), args.prefetch)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
