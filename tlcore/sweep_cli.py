"""`python -m tlcore sweep`: run an experiment from the command line and print its verdict.

One line per finished run, then a table of cells (mean ± std over seeds) and the verdict;
with `--json` the progress goes to stderr and the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

GROUP_KEYS = ("backbone", "strategy", "lr", "name", "n", "rank", "best_val_acc_mean", "best_val_acc_std",
              "best_val_accs", "final_val_acc_mean", "final_val_acc_std", "final_val_accs", "seconds_mean",
              "seconds_std", "seconds", "wilson_low", "wilson_high", "trainable_params", "num_val", "seeds",
              "run_ids")


def add_sweep_arguments(p: argparse.ArgumentParser, default_backbone: str) -> None:
    """The grid options; `cli.py` adds the shared run settings."""
    p.add_argument("--strategies", required=True, help="comma-separated, e.g. feature_extraction,finetune")
    p.add_argument("--backbones", default=default_backbone, help="comma-separated backbones")
    p.add_argument("--seeds", type=int, default=3, help="runs per cell: seeds --seed, --seed+1, ...")
    p.add_argument("--lrs", default=None, help="comma-separated learning rates to cross with the grid")
    p.add_argument("--strategy-lrs", default=None,
                   help="per-strategy learning rate, e.g. finetune=1e-4 (others use --lr)")
    p.add_argument("--data-seed", type=int, default=None, help="seeds the split and subset (default: --seed)")


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def parse_grid(args):
    """The Grid from the arguments; raises ValueError with what is valid."""
    from tlcore.experiments import Grid

    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1 (3 or more to see the seed-to-seed spread), got {args.seeds}")
    try:
        lrs = [float(x) for x in _split(args.lrs)] or None
        strategy_lrs = {k.strip(): float(v) for k, v in (item.split("=", 1) for item in _split(args.strategy_lrs))}
    except ValueError:
        raise ValueError("--lrs takes numbers like 1e-3,1e-4 and --strategy-lrs pairs like finetune=1e-4") from None
    seeds = list(range(args.seed, args.seed + args.seeds))
    return Grid(_split(args.strategies), _split(args.backbones), seeds, lrs, strategy_lrs).validate()


def cmd_sweep(args, base) -> int:
    """Run the experiment; 0 when every run finished, 1 otherwise, 2 for a bad grid."""
    from tlcore.analysis.experiment_report import report
    from tlcore.data.sources import check_data_spec
    from tlcore.experiments import cancel_experiment, start_experiment
    from tlcore.paths import runs_root
    from tlcore.training.jobs import get_manager

    try:
        grid = parse_grid(args)
        base.data_seed = args.data_seed
        base.validate()
        check_data_spec(base.data)
    except ValueError as exc:
        print(f"tlcore: error: {exc}", file=sys.stderr)
        return 2
    out = sys.stderr if args.json else sys.stdout
    manager = get_manager(args.runs_dir or runs_root())
    t0 = time.perf_counter()
    counter = {"done": 0}

    def show(run_id, kind: str, data: dict) -> None:
        if kind in ("finished", "failed", "cancelled"):
            counter["done"] += 1
            print(_run_line(manager.store.load(run_id), counter["done"], grid.size, data), file=out, flush=True)

    record = start_experiment(manager, base, grid, listener=show)
    print(f"experiment {record['experiment_id']}: {grid.size} runs queued", file=out, flush=True)
    try:
        for run in record["runs"]:
            manager.wait(run["run_id"])
    except KeyboardInterrupt:
        cancel_experiment(manager, record["experiment_id"])
        for run in record["runs"]:
            manager.wait(run["run_id"])
    wall = time.perf_counter() - t0
    result = report(manager.store.root, record["experiment_id"])
    print(format_table(result["groups"]), file=out)
    print(result["verdict"], file=out)
    print(f"wall time {wall:.0f} s", file=out, flush=True)
    if args.json:
        print(json.dumps(json_summary(result, wall)))
    return 0 if result["status"] == "finished" else 1


def _run_line(rec, done: int, total: int, data: dict) -> str:
    cell = rec.config.get("cell") or {}
    head = f"run {done}/{total} {rec.state:9} {cell.get('backbone')}/{cell.get('strategy')} lr {cell.get('lr'):g} " \
           f"seed {cell.get('seed')}"
    if rec.state != "finished":
        return f"{head}: {data.get('message', '')}"
    return (f"{head}  best val acc {data['best_val_acc']:.4f} (epoch {data['best_epoch']})  "
            f"final {data['final_val_acc']:.4f}  {data['seconds']:.1f} s")


def format_table(groups: list[dict]) -> str:
    """Cells as text: mean ± std over seeds of best and final accuracy, Wilson interval, seconds."""
    width = max([len(g["name"]) for g in groups] + [4])
    lines = [f"{'rank':4}  {'cell':{width}}  {'n':>2}  {'best val acc':>15}  {'final val acc':>15}  "
             f"{'Wilson 95%':>13}  {'seconds':>13}  {'trainable':>10}"]
    for g in sorted(groups, key=lambda g: g["rank"] or 999):
        if not g["n"]:
            lines.append(f"{'-':4}  {g['name']:{width}}  {0:>2}  (no finished run)")
            continue
        lines.append(
            f"{g['rank']:<4}  {g['name']:{width}}  {g['n']:>2}  {_pm(g['best_val_acc_mean'], g['best_val_acc_std'])}  "
            f"{_pm(g['final_val_acc_mean'], g['final_val_acc_std'])}  "
            f"{g['wilson_low']:.3f}-{g['wilson_high']:.3f}  "
            f"{_pm(g['seconds_mean'], g['seconds_std'], '.1f', 6):>13}  {g['trainable_params'] or 0:>10,}")
        lines.append(f"{'':4}  {'':{width}}      seeds: " + ", ".join(f"{a:.4f}" for a in g["best_val_accs"]))
    return "\n".join(lines)


def _pm(mean, std, fmt: str = ".4f", width: int = 6) -> str:
    std_text = "n/a" if std is None or std != std else format(std, fmt)
    return f"{format(mean, fmt):>{width}} ± {std_text:<{width}}"


def json_summary(result: dict, wall: float) -> dict:
    """The `--json` object: experiment id, groups, the comparison and the verdict."""
    def clean(value):
        return None if isinstance(value, float) and value != value else value  # NaN is not JSON

    groups = [{k: clean(g.get(k)) for k in GROUP_KEYS} for g in result["groups"]]
    return {"experiment_id": result["experiment_id"], "status": result["status"], "groups": groups,
            "comparison": result["comparison"], "verdict": result["verdict"], "wall_seconds": round(wall, 1)}
