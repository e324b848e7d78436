"""What the pages show of experiments: the plan before starting, progress, bands and tables.

Pure functions over experiment records and reports (experiments.py, experiment_report.py);
the pages only lay them out. No streamlit here.
"""

from __future__ import annotations

from dataclasses import dataclass

import altair as alt
import pandas as pd

from tlcore.analysis import stats
from tlcore.experiments import Grid, count_images, estimate, estimate_text, expand, progress
from tlcore.runs import RunStore
from tlcore.training.config import TrainConfig

METRIC_TITLES = {"acc": "validation accuracy", "loss": "validation loss"}


@dataclass
class Plan:
    """An experiment ready to start: what it will queue and about how long it takes."""

    base: TrainConfig
    grid: Grid
    configs: list[TrainConfig]
    rows: list[dict]
    text: str

    @property
    def runs(self) -> int:
        return len(self.configs)


def plan(base: TrainConfig, strategies: list[str], backbones: list[str], seeds: int,
         strategy_lrs: dict[str, float] | None = None, history: list | None = None) -> Plan:
    """Expand the picks into runs and estimate them; raises ValueError saying what to change."""
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1 (3 or more to see the seed-to-seed spread), got {seeds}")
    grid = Grid(list(strategies), list(backbones), list(range(base.seed, base.seed + seeds)),
                strategy_lrs=dict(strategy_lrs or {})).validate()
    configs = expand(base, grid)
    rows = estimate(configs, count_images(base), history)
    return Plan(base, grid, configs, rows, estimate_text(rows))


def experiment_label(record: dict) -> str:
    """`exp-... · digits · 2 strategies x 1 backbone x 3 seeds · finished`."""
    from tlcore.views.charts import dataset_name

    grid = record["grid"]
    parts = [f"{len(grid['strategies'])} strateg{'y' if len(grid['strategies']) == 1 else 'ies'}",
             f"{len(grid['backbones'])} backbone{'' if len(grid['backbones']) == 1 else 's'}",
             f"{len(grid['seeds'])} seed{'' if len(grid['seeds']) == 1 else 's'}"]
    if grid.get("lrs"):
        parts.append(f"{len(grid['lrs'])} learning rates")
    return f"{record['experiment_id']} · {dataset_name(record['data'])} · {' x '.join(parts)} · {record['status']}"


def progress_line(record: dict) -> tuple[float, str]:
    """(fraction done, `run 4 of 9: efficientnet_lite0/finetune, seed 1`) for a progress bar."""
    p = progress(record)
    if p["current_index"] is None:
        text = f"{p['done']} of {p['total']} runs done" + ("; the next is queued" if p["done"] < p["total"] else "")
    else:
        cell = record["runs"][p["current_index"] - 1]
        text = f"run {p['current_index']} of {p['total']}: {cell['backbone']}/{cell['strategy']}, seed {cell['seed']}"
    return (p["done"] / p["total"] if p["total"] else 1.0), text


def _band_frames(runs: RunStore, shown: list[dict], metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per seed and epoch, one row per cell and epoch with mean, std and the band's ends)."""
    seeds, cells = [], []
    for group in shown:
        series = f"{group['name']} (mean of {group['n']})"
        curves = pd.DataFrame({seed: pd.Series({m["epoch"]: m.get(f"val_{metric}") for m in runs.load(rid).metrics})
                               for rid, seed in zip(group["run_ids"], group["seeds"], strict=True)}).astype(float)
        for seed in curves.columns:
            seeds += [{"series": series, "cell": group["name"], "seed": str(seed), "epoch": int(epoch), "value": v}
                      for epoch, v in curves[seed].dropna().items()]
        mean, std = curves.mean(axis=1), curves.std(axis=1, ddof=1).fillna(0)
        cells += [{"series": series, "cell": group["name"], "n": group["n"], "epoch": int(epoch), "mean": mean[epoch],
                   "std": std[epoch], "low": mean[epoch] - std[epoch], "high": mean[epoch] + std[epoch]}
                  for epoch in curves.index if mean[epoch] == mean[epoch]]
    columns = ["series", "cell", "n", "epoch", "mean", "std", "low", "high"]
    return (pd.DataFrame(seeds, columns=["series", "cell", "seed", "epoch", "value"]),
            pd.DataFrame(cells, columns=columns))


def band_figure(runs: RunStore, groups: list[dict], metric: str = "acc", height: int = 340) -> alt.LayerChart:
    """Each cell's mean `val_<metric>` per epoch with a shaded ± std band; its seeds faint behind."""
    if metric not in METRIC_TITLES:
        raise ValueError(f"unknown metric {metric!r}: choose one of {', '.join(METRIC_TITLES)}")
    shown = [g for g in groups if g["n"]]
    seeds, cells = _band_frames(runs, shown, metric)
    fmt = ".1%" if metric == "acc" else ".4f"
    names = [f"{g['name']} (mean of {g['n']})" for g in shown]
    x = alt.X("epoch:Q", title="epoch", scale=alt.Scale(zero=False), axis=alt.Axis(tickMinStep=1, format="d"))
    scale = alt.Scale(zero=False)
    axis = alt.Axis(format=".0%") if metric == "acc" else alt.Axis()
    # One legend of the cells below the plot, one entry a line: long cell names never cover the curves.
    # tableau10: a hue per cell (Streamlit's palette pairs dark and light blue), band and seeds in its shade.
    color = alt.Color("series:N", title=None, scale=alt.Scale(domain=names, scheme="tableau10"),
                      legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=480, symbolType="stroke",
                                        symbolOpacity=1, symbolStrokeWidth=3))
    seed_tips = [alt.Tooltip("cell:N"), alt.Tooltip("seed:N"), alt.Tooltip("epoch:Q"),
                 alt.Tooltip("value:Q", title=METRIC_TITLES[metric], format=fmt)]
    per_seed = alt.Chart(seeds).encode(x=x, y=alt.Y("value:Q", title=None, scale=scale, axis=axis), color=color)
    seed_lines = per_seed.mark_line(strokeWidth=1, opacity=0.35).encode(detail="seed:N")
    # A line's tooltip names one point only; a transparent point per epoch gives each its own.
    seed_points = per_seed.mark_point(size=40, opacity=0, filled=True).encode(tooltip=seed_tips)
    band = alt.Chart(cells[cells["n"] > 1]).mark_area(opacity=0.18).encode(
        x=x, y=alt.Y("low:Q", title=None, scale=scale, axis=axis), y2="high:Q", color=color)
    mean = alt.Chart(cells).mark_line(strokeWidth=3, point=True).encode(
        x=x, y=alt.Y("mean:Q", title=None, scale=scale, axis=axis), color=color,
        tooltip=[alt.Tooltip("cell:N"), alt.Tooltip("epoch:Q"), alt.Tooltip("mean:Q", format=fmt),
                 alt.Tooltip("std:Q", title="± std", format=fmt), alt.Tooltip("n:Q", title="seeds")])
    legend_px = 20 * max(1, len(shown)) + 10
    return alt.layer(band, seed_lines, seed_points, mean).properties(
        width="container", height=height + legend_px,
        title=alt.TitleParams(f"{METRIC_TITLES[metric]}: mean ± std over seeds", anchor="start"))


def _pm(mean, std, pct: bool) -> str:
    if mean is None:
        return "-"
    scale, fmt = (100, ".1f") if pct else (1, ".0f" if mean >= 10 else ".1f")
    std_text = "" if std is None or std != std else f" ± {scale * std:{fmt}}"
    return f"{scale * mean:{fmt}}{std_text}{'%' if pct else ' s'}"


def _millions(n) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M" if n >= 10**5 else f"{n / 1e3:.1f}k"


def display_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """The cells table as the page shows it: narrow enough for the page, numbers in the CSV."""
    out = summary.drop(columns=["best val acc mean", "best val acc std", "per seed (best)"])
    out["trainable params"] = out["trainable params"].map(_millions)
    return out.rename(columns={"seeds": "n", "trainable params": "trainable"})


def summary_frame(groups: list[dict]) -> pd.DataFrame:
    """One row per cell, best first: mean ± std over seeds, Wilson interval, seconds, size."""
    rows = []
    for g in sorted(groups, key=lambda g: g["rank"] or 10**6):
        done = bool(g["n"])
        rows.append({
            "rank": g["rank"], "cell": g["name"], "seeds": g["n"],
            "best val acc": _pm(g["best_val_acc_mean"], g["best_val_acc_std"], True),
            "final val acc": _pm(g["final_val_acc_mean"], g["final_val_acc_std"], True),
            "Wilson 95%": f"{100 * g['wilson_low']:.1f}-{100 * g['wilson_high']:.1f}%" if done else "-",
            "seconds": _pm(g["seconds_mean"], g["seconds_std"], False),
            "trainable params": g["trainable_params"],
            "per seed (best)": ", ".join(f"{100 * a:.1f}%" for a in g["best_val_accs"]),
            "best val acc mean": g["best_val_acc_mean"], "best val acc std": g["best_val_acc_std"],
        })
    return pd.DataFrame(rows)


def seeds_frame(runs: RunStore, groups: list[dict]) -> pd.DataFrame:
    """One row per finished run: its cell, seed, best accuracy with its Wilson interval, final, seconds, id."""
    rows = []
    for g in groups:
        for rid, seed in zip(g["run_ids"], g["seeds"], strict=True):
            status = runs.load(rid).status
            acc, n = status.get("best_val_acc"), status.get("num_val") or 0
            low, high = stats.wilson_interval(round(acc * n), n) if acc is not None and n else (None, None)
            rows.append({"cell": g["name"], "seed": seed, "best val acc": acc,
                         "Wilson 95%": f"{100 * low:.1f}-{100 * high:.1f}%" if low is not None else "-",
                         "best epoch": status.get("best_epoch"), "final val acc": status.get("final_val_acc"),
                         "seconds": round(status.get("seconds") or 0, 1), "run id": rid})
    return pd.DataFrame(rows)


def strategy_lrs(strategies: list[str], chosen: str, lr: float, optimizer: str) -> dict[str, float]:
    """Each strategy's default learning rate, except the form's own strategy: the form's rate."""
    from tlcore.training.config import default_lr

    return {s: (lr if s == chosen else default_lr(s, optimizer)) for s in strategies}


def live_experiments(runs_dir) -> list[dict]:
    """Experiments with runs queued or training, newest first."""
    from tlcore.experiments import ExperimentStore

    return [r for r in ExperimentStore(runs_dir).list() if r["status"] in ("queued", "running")]


def experiments_to_show(runs_dir, started: str | None = None) -> list[dict]:
    """Live experiments, plus `started` (this session's last) once it has ended, so its end is seen."""
    from tlcore.experiments import ExperimentStore

    records = ExperimentStore(runs_dir).list()
    return [r for r in records if r["status"] in ("queued", "running") or r["experiment_id"] == started]


def display_seeds(seeds: pd.DataFrame) -> pd.DataFrame:
    """The runs table as the page shows it: percentages, no run id (the CSV keeps both)."""
    out = seeds.drop(columns=["run id"], errors="ignore")
    for col in ("best val acc", "final val acc"):
        out[col] = out[col].map(lambda v: "-" if v is None or v != v else f"{100 * v:.1f}%")
    return out
