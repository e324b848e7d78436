"""Experiments: one dataset and shared settings crossed with a grid, run as ordinary runs.

A grid of strategies x backbones (x learning rates) x seeds expands into one `TrainConfig`
per cell, each queued on the `JobManager` and tagged with its experiment id and cell. Every
run of an experiment gets the same `data_seed`, so all see the same validation images and
can be compared image by image (stats.py). The experiment itself is a JSON record in
`<runs>/experiments/`, written atomically, readable while half-done and after a restart.
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from tlcore.experiment_index import files_for
from tlcore.models.backbones import get_backbone, list_backbones
from tlcore.runs import ACTIVE, FINAL, RunNotFound, RunStore, read_json, validate_run_id, write_json
from tlcore.training.config import TrainConfig
from tlcore.training.strategies import STRATEGIES

FOLDER = "experiments"
MAX_RUNS = 200  # a grid beyond this is almost surely a typo (e.g. 100 seeds x 3 x 3)


@dataclass
class Grid:
    """What an experiment crosses; seeds vary initialisation, shuffling and augmentation only."""

    strategies: list[str]
    backbones: list[str]
    seeds: list[int]
    lrs: list[float] | None = None  # None: the base config's lr (or strategy_lrs)
    strategy_lrs: dict[str, float] = field(default_factory=dict)  # e.g. {"finetune": 1e-4}

    def validate(self) -> Grid:
        """Raise ValueError with one line saying what is valid."""
        if not self.strategies:
            raise ValueError(f"pick at least one strategy: {', '.join(STRATEGIES)}")
        if not self.backbones:
            raise ValueError(f"pick at least one backbone: {', '.join(list_backbones())}")
        for name in self.strategies + list(self.strategy_lrs):
            if name not in STRATEGIES:
                raise ValueError(f"unknown strategy {name!r}: choose from {', '.join(STRATEGIES)}")
        for name in self.backbones:
            if name not in list_backbones():
                raise ValueError(f"unknown backbone {name!r}: choose from {', '.join(list_backbones())}")
        if len(self.seeds) < 1:
            raise ValueError("seeds must be at least 1 (3 or more to see the seed-to-seed spread)")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must differ, got {self.seeds}")
        for lr in (self.lrs or []) + list(self.strategy_lrs.values()):
            if not 0 < lr <= 1e4:
                raise ValueError(f"learning rates must be > 0, got {lr}")
        if len(set(self.strategies)) != len(self.strategies) or len(set(self.backbones)) != len(self.backbones):
            raise ValueError("each strategy and backbone may appear once in a grid")
        if self.size > MAX_RUNS:
            raise ValueError(f"the grid has {self.size} runs, more than {MAX_RUNS}: use fewer seeds or cells")
        return self

    @property
    def size(self) -> int:
        return len(self.strategies) * len(self.backbones) * len(self.lrs or [None]) * len(self.seeds)

    def to_dict(self) -> dict:
        return {"strategies": list(self.strategies), "backbones": list(self.backbones), "seeds": list(self.seeds),
                "lrs": list(self.lrs) if self.lrs else None, "strategy_lrs": dict(self.strategy_lrs)}


def expand(base: TrainConfig, grid: Grid, experiment_id: str | None = None) -> list[TrainConfig]:
    """One config per grid cell, seed-major: every cell gets its first seed before any its second.

    The data seed is the base config's (`data_seed`, else `seed`) for every run.
    """
    grid.validate()
    data_seed = base.seed if base.data_seed is None else base.data_seed
    configs = []
    for seed, backbone, strategy, lr in itertools.product(grid.seeds, grid.backbones, grid.strategies,
                                                          grid.lrs or [None]):
        lr = lr if lr is not None else grid.strategy_lrs.get(strategy, base.lr)
        cell = {"backbone": backbone, "strategy": strategy, "lr": lr, "seed": seed}
        configs.append(replace(base, backbone=backbone, strategy=strategy, lr=lr, seed=seed,
                               data_seed=data_seed, experiment_id=experiment_id, cell=cell).validate())
    return configs


def cell_key(cell: dict) -> tuple:
    """The group a run belongs to: its cell without the seed."""
    return (cell.get("backbone"), cell.get("strategy"), cell.get("lr"))


def cell_name(cell: dict, with_lr: bool = False, with_backbone: bool = True) -> str:
    """`backbone/strategy`, plus `@lr` when the grid crosses learning rates."""
    name = f"{cell['backbone']}/{cell['strategy']}" if with_backbone else cell["strategy"]
    return f"{name}@{cell['lr']:g}" if with_lr else name


# ---- the record on disk ---------------------------------------------------------------------


class ExperimentStore:
    """`<runs>/experiments/<id>.json`: each experiment's grid, runs and times."""

    def __init__(self, runs_dir: str | Path):
        self.runs = RunStore(runs_dir)
        self.folder = Path(runs_dir) / FOLDER

    def new_id(self) -> str:
        return f"exp-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"

    def path(self, experiment_id: str) -> Path:
        return self.folder / f"{validate_run_id(experiment_id)}.json"

    def save(self, record: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.path(record["experiment_id"]), record)

    def load(self, experiment_id: str) -> dict:
        """The record plus each run's current state (`states`) and the experiment's `status`."""
        record = read_json(self.path(experiment_id))
        if record is None:
            raise RunNotFound(f"no experiment {experiment_id!r} in {self.folder.parent}")
        return self._with_states(record)

    def list(self) -> list[dict]:
        """Every readable experiment, newest first: only files changed since the last listing in
        this process are read (experiment_index.py), and the runs' states come from the run index."""
        records = files_for(self.folder).records()
        if not records:
            return []
        runs = {r.run_id: r for r in self.runs.list()}
        listed = []
        for record in records:
            try:
                listed.append(self._with_states(record, runs.get))
            except (ValueError, LookupError, TypeError):
                continue  # a damaged record never hides the others
        return sorted(listed, key=lambda r: r.get("created", 0), reverse=True)

    def _with_states(self, record: dict, find=None) -> dict:
        """`find(run_id)`: the run's RunRecord or None (default: read it from its folder)."""
        find = find or self._load_run
        states = {}
        for run in record["runs"]:
            found = find(run["run_id"])
            states[run["run_id"]] = found.state if found is not None else "missing"
        record = {**record, "states": states, "status": experiment_status(record, states)}
        if record["status"] not in ACTIVE and not record.get("finished"):
            ended = [found.status.get("ended") for rid in states if (found := find(rid)) is not None]
            record["finished"] = max((t for t in ended if t), default=None)
        return record

    def _load_run(self, run_id: str):
        try:
            return self.runs.load(run_id)
        except (LookupError, ValueError, OSError):
            return None


def experiment_status(record: dict, states: dict[str, str]) -> str:
    """queued, running, finished, cancelled, failed or interrupted, from its runs' states."""
    values = list(states.values())
    if any(s == "running" for s in values):
        return "running"
    if any(s == "queued" for s in values):
        return "running" if any(s in FINAL for s in values) else "queued"
    if record.get("cancelled"):
        return "cancelled"
    for state in ("interrupted", "failed", "cancelled"):
        if state in values:
            return state
    return "finished"


# ---- starting, following and cancelling -----------------------------------------------------


def start_experiment(manager, base: TrainConfig, grid: Grid, listener=None) -> dict:
    """Record an experiment and queue its runs on `manager` (a JobManager); returns the record.

    `listener(run_id, kind, data)`, when given, sees every event of every run.
    """
    store = ExperimentStore(manager.store.root)
    experiment_id = store.new_id()
    configs = expand(base, grid, experiment_id)
    base_dict = {k: v for k, v in base.to_dict().items() if k not in ("experiment_id", "cell")}
    record = {"format": 1, "experiment_id": experiment_id, "created": time.time(), "finished": None,
              "data": base.data, "data_seed": configs[0].data_seed, "base": base_dict, "grid": grid.to_dict(),
              "runs": []}
    store.save(record)  # before any run exists: a run's experiment id always resolves
    for cfg in configs:
        holder: dict = {}
        run_id = manager.submit(cfg, listener=_follow(store, experiment_id, listener, holder))
        holder["run_id"] = run_id
        record["runs"].append({"run_id": run_id, **cfg.cell})
        store.save(record)
    return store.load(experiment_id)


def _follow(store: ExperimentStore, experiment_id: str, listener, holder: dict):
    """An event listener for one run: passes events on, stamps `finished` after the last run."""

    def on_event(kind: str, data: dict) -> None:
        if listener is not None:
            listener(holder.get("run_id"), kind, data)
        if kind in FINAL:
            current = store.load(experiment_id)
            if current["status"] not in ACTIVE:
                clean = {k: v for k, v in current.items() if k not in ("states", "status")}
                store.save({**clean, "finished": time.time()})

    return on_event


def cancel_experiment(manager, experiment_id: str) -> int:
    """Cancel the experiment's queued and running runs here; returns how many were asked to stop."""
    store = ExperimentStore(manager.store.root)
    record = store.load(experiment_id)
    clean = {k: v for k, v in record.items() if k not in ("states", "status")}
    store.save({**clean, "cancelled": True})
    return sum(manager.cancel(run["run_id"]) for run in record["runs"])


def progress(record: dict) -> dict:
    """How far an experiment is: done/total, and the run now training (1-based position)."""
    states = record["states"]
    runs = [r["run_id"] for r in record["runs"]]
    done = sum(states.get(rid) in FINAL for rid in runs)
    current = next((i for i, rid in enumerate(runs) if states.get(rid) == "running"), None)
    return {"done": done, "total": len(runs), "current_index": None if current is None else current + 1,
            "current_run": None if current is None else runs[current]}


# ---- cost estimate --------------------------------------------------------------------------

# Seconds per image per epoch at 224 px on the 2-core CPU this was built on (Lite0; bigger
# backbones cost more): a full training step, and one frozen forward pass for the cache; plus
# each run's start (model, data). Small images do not get cheaper in proportion (per-batch
# overheads), hence the floor on the size factor.
STEP_SECONDS, FORWARD_SECONDS, HEAD_RUN_SECONDS, RUN_START_SECONDS, MIN_SCALE = 0.06, 0.02, 2.0, 5.0, 0.3


def estimate(configs: list[TrainConfig], num_images: int, history: list | None = None) -> list[dict]:
    """A rough time per run and whether it is cheap (its backbone features come from the cache).

    Feature-extraction runs without augmentation share one feature cache per backbone (the
    data seed is fixed), so only the first pays for the backbone; the rest train a head.
    `gradual` runs train their head epochs on that cache too: only the later epochs cost steps.
    `history` (RunRecords) calibrates: a finished run with the same backbone, strategy, data and
    image size gives its measured seconds per epoch.
    """
    seen_cache: set[str] = set()
    rows = []
    for cfg in configs:
        scale = max(MIN_SCALE, (get_backbone(cfg.backbone).preprocessing(cfg.image_size)[1] / 224) ** 2)
        deterministic = cfg.augment == "none" and cfg.feature_cache
        cached_path = cfg.strategy == "feature_extraction" and deterministic
        head_epochs = min(cfg.head_epochs, cfg.epochs) if cfg.strategy == "gradual" and deterministic else 0
        if cached_path and cfg.backbone in seen_cache:
            seconds, cheap = HEAD_RUN_SECONDS, True
        else:
            measured = _measured(history or [], cfg)
            if cached_path:
                seconds = RUN_START_SECONDS + FORWARD_SECONDS * scale * num_images + HEAD_RUN_SECONDS
                seen_cache.add(cfg.backbone)
            else:
                features = FORWARD_SECONDS * scale * num_images if head_epochs and cfg.backbone not in seen_cache else 0
                seconds = measured or (RUN_START_SECONDS + features
                                       + STEP_SECONDS * scale * num_images * (cfg.epochs - head_epochs))
                if head_epochs:
                    seen_cache.add(cfg.backbone)
            cheap = False
        rows.append({"backbone": cfg.backbone, "strategy": cfg.strategy, "lr": cfg.lr, "seed": cfg.seed,
                     "seconds": round(seconds, 1), "cheap": cheap})
    return rows


def _measured(history: list, cfg: TrainConfig) -> float | None:
    for record in history:
        c = record.config
        if (record.state == "finished" and c.get("backbone") == cfg.backbone and c.get("strategy") == cfg.strategy
                and c.get("data") == cfg.data and c.get("image_size") == cfg.image_size and record.metrics):
            per_epoch = sum(m.get("seconds", 0) for m in record.metrics) / len(record.metrics)
            return per_epoch * cfg.epochs if math.isfinite(per_epoch) else None
    return None


def count_images(base: TrainConfig) -> int:
    """Images one run of the experiment will decode (train + validation), for the estimate."""
    from tlcore.data.sources import resolve_data

    seed = base.seed if base.data_seed is None else base.data_seed
    return resolve_data(base.data, val_fraction=base.val_fraction, subset=base.subset, seed=seed).num_images


def estimate_text(rows: list[dict]) -> str:
    """One line: how many runs, about how long, and which are cheap."""
    total = sum(r["seconds"] for r in rows)
    cheap = [r for r in rows if r["cheap"]]
    line = f"{len(rows)} runs, about {_duration(total)} in all"
    if cheap:
        which = "all of them are" if len(cheap) == len(rows) else (
            f"{len(cheap)} of them {'is' if len(cheap) == 1 else 'are'}")
        line += (f"; {which} quick (feature extraction on the cached backbone features, "
                 f"about {_duration(cheap[0]['seconds'])} each)")
    return line


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
