"""An experiment's results: one group per grid cell (seeds pooled), ranked, and a verdict.

Reads only what runs saved (status summaries and val_results.json), never a model, so it is
cheap to recompute on every page view or CLI call, also for a half-done experiment.
"""

from __future__ import annotations

from tlcore.analysis import stats
from tlcore.experiments import ExperimentStore, cell_key, cell_name
from tlcore.runs import RunStore


def groups_of(runs: RunStore, record: dict) -> list[dict]:
    """One dict per cell (backbone, strategy, lr), in grid order, over its finished runs."""
    with_lr = len({r["lr"] for r in record["runs"]}) > 1 and bool(record["grid"].get("lrs"))
    order: dict[tuple, dict] = {}
    for run in record["runs"]:
        group = order.setdefault(cell_key(run), {
            "backbone": run["backbone"], "strategy": run["strategy"], "lr": run["lr"],
            "name": cell_name(run, with_lr), "runs": [], "planned": 0})
        group["planned"] += 1
        try:
            rec = runs.load(run["run_id"])
        except (LookupError, ValueError, OSError):
            continue
        if rec.state == "finished" and rec.status.get("best_val_acc") is not None:
            group["runs"].append(rec)
    groups = [_summarize(g) for g in order.values()]
    ranked = sorted((g for g in groups if g["n"]), key=lambda g: -g["best_val_acc_mean"])
    for rank, g in enumerate(ranked, 1):
        g["rank"] = rank
    return groups


def _summarize(group: dict) -> dict:
    recs = group.pop("runs")
    best = [r.status["best_val_acc"] for r in recs]
    final = [r.status.get("final_val_acc") for r in recs]
    seconds = [r.status.get("seconds") for r in recs]
    num_val = max((r.status.get("num_val") or 0 for r in recs), default=0)
    best_mean, best_std = stats.mean_std(best)
    final_mean, final_std = stats.mean_std(final)
    sec_mean, sec_std = stats.mean_std(seconds)
    # The interval of the cell's mean accuracy from the validation sample alone (seeds pooled):
    # how far another set of images this size could move it.
    low, high = stats.wilson_interval(round(best_mean * num_val), num_val) if recs else (None, None)
    return {**group, "n": len(recs), "run_ids": [r.run_id for r in recs],
            "seeds": [r.config.get("seed") for r in recs], "best_val_accs": best,
            "best_val_acc_mean": best_mean if recs else None, "best_val_acc_std": best_std if recs else None,
            "final_val_accs": final, "final_val_acc_mean": final_mean if recs else None,
            "final_val_acc_std": final_std if recs else None, "seconds": seconds,
            "seconds_mean": sec_mean if recs else None, "seconds_std": sec_std if recs else None,
            "trainable_params": recs[0].status.get("trainable_params") if recs else None,
            "num_val": num_val, "wilson_low": low, "wilson_high": high, "rank": None}


def compare_groups(runs: RunStore, a: dict, b: dict, resamples: int = stats.RESAMPLES) -> stats.Comparison | None:
    """Paired comparison of two groups on their shared validation images; None without results."""
    sides = []
    for group in (a, b):
        results = [runs.load_val_results(rid) for rid in group["run_ids"]]
        results = [stats.correctness(r) for r in results if r]
        if not results:
            return None
        sides.append(results)
    return stats.compare(a["name"], sides[0], b["name"], sides[1], resamples=resamples)


def report(runs_dir, experiment_id: str, pick: tuple[str, str] | None = None,
           resamples: int = stats.RESAMPLES) -> dict:
    """Everything the CLI and the Compare page show about an experiment.

    Args:
        pick: two group names to compare; default the two best-ranked groups.

    Returns:
        {experiment_id, status, record, groups, comparison (dict or None), verdict (str)}.
    """
    store = ExperimentStore(runs_dir)
    record = store.load(experiment_id)
    groups = groups_of(store.runs, record)
    by_name = {g["name"]: g for g in groups}
    if pick is not None:
        unknown = [n for n in pick if n not in by_name]
        if unknown:
            raise ValueError(f"no cell {unknown[0]!r} in {experiment_id}: choose from {', '.join(by_name)}")
        pair = [by_name[pick[0]], by_name[pick[1]]]
    else:
        pair = [by_name[name] for name in best_two(groups)]
    comparison, verdict = None, _no_verdict(groups)
    if len(pair) == 2 and pair[0] is pair[1]:
        verdict = "pick two different cells to compare"
    elif len(pair) == 2 and all(g["n"] for g in pair):
        comparison = compare_groups(store.runs, pair[0], pair[1], resamples)
        verdict = comparison.verdict if comparison else "these runs saved no per-image results: run them again"
    return {"experiment_id": experiment_id, "status": record["status"], "record": record, "groups": groups,
            "comparison": comparison.to_dict() if comparison else None, "verdict": verdict}


def _no_verdict(groups: list[dict]) -> str:
    done = [g for g in groups if g["n"]]
    if len(groups) < 2:
        return "one cell only: nothing to compare"
    return f"{len(done)} of {len(groups)} cells have a finished run so far: no comparison yet"


def best_two(groups: list[dict]) -> list[str]:
    """Names of the two best-ranked cells with a finished run (fewer if there are fewer)."""
    return [g["name"] for g in sorted((g for g in groups if g["n"]), key=lambda g: g["rank"])[:2]]
