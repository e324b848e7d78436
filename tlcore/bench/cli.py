"""`python -m tlcore.bench`: options, quick mode, and the run."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from tlcore.bench.common import HYMENOPTERA, ROWS
from tlcore.bench.inputs import engine_version, find_hymenoptera, folder_datasets, make_standin, set_allocator
from tlcore.bench.report import render_report
from tlcore.bench.rows import Setup, bench_rows, study_threads, warm_up
from tlcore.models import backbones
from tlcore.training.config import TrainConfig
from tlcore.training.device import pick_device


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
