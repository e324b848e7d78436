"""Run folders written directly (no training): many runs in a second, as RunStore writes them."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tlcore.runs import RunStore, owner
from tlcore.training.config import TrainConfig

DEAD_OWNER = {"pid": 2**22 + 12345, "token": "gone", "pid_start": "1"}  # no such process


def fake_run(store: RunStore, i: int, state: str = "finished", created: float | None = None,
             epochs: int = 2, **config) -> str:
    """Write run number `i` (ids sort by `created`) in `state`; returns its id. A running or
    queued run is owned by this process, so it reads back as active."""
    created = time.time() - 10_000 + i if created is None else created
    cfg = {**TrainConfig(backbone="simple_cnn", strategy="scratch", data="digits", epochs=epochs,
                         image_size=32, seed=i).to_dict(), **config}
    run_id = f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(created))}-{cfg['backbone']}-{cfg['strategy']}-{i:06x}"
    store.create(run_id, cfg)
    finish(store, run_id, state, created, epochs)
    return run_id


def finish(store: RunStore, run_id: str, state: str = "finished", created: float | None = None,
           epochs: int = 2) -> None:
    """Give a run `epochs` epochs of curves and the state `state`."""
    status = store.load(run_id).status
    created = status.get("created") if created is None else created
    rows = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5 + e / 100, "val_loss": 1.2 / e,
             "val_acc": 0.4 + e / 100, "lr": 1e-3, "seconds": 0.1} for e in range(1, epochs + 1)]
    store.write_metrics(run_id, rows if state != "queued" else [])
    who = owner() if state in ("queued", "running") else DEAD_OWNER
    store.write_status(run_id, {**status, **who, "status": state, "created": created,
                                "best_val_acc": 0.4 + epochs / 100, "best_epoch": epochs})


def age(folder: Path, seconds: float = 60) -> None:
    """Set a folder's modification time `seconds` into the past (as if written long ago)."""
    t = time.time() - seconds
    os.utime(folder, (t, t))
