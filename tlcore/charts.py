"""Plotly figures and pandas tables built from runs: pure functions the pages only display.

A "run" here is either a `RunRecord` (from disk) or a snapshot dict from
`JobManager.snapshot` (live); both carry a config, a status and per-epoch metrics. Figures set
no template, so `st.plotly_chart(..., theme="streamlit")` colours them for the light or the
dark theme alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from tlcore.runs import RunRecord

PALETTE = qualitative.Plotly
SPLIT_DASH = {"train": "dash", "val": "solid"}
METRIC_TITLES = {"acc": "accuracy", "loss": "loss"}


def _parts(run: RunRecord | dict) -> tuple[str, dict, dict, list[dict]]:
    """(run_id, config, status, metrics) of a record or a snapshot."""
    # Test for the dict, not for RunRecord: Streamlit's reloader may re-create the class while
    # records made before the reload live on in the cached job manager.
    if isinstance(run, dict):
        return run.get("run_id", ""), run.get("config") or {}, run, run.get("metrics") or []
    return run.run_id, run.config, run.status, run.metrics


def run_name(run: RunRecord | dict) -> str:
    """`backbone + strategy`, the name a run goes by in legends and tables."""
    _, config, _, _ = _parts(run)
    return f"{config.get('backbone')} + {config.get('strategy')}"


def run_names(runs: Sequence[RunRecord | dict]) -> list[str]:
    """Names for several runs, made unique: a clash gets the start time, then a number."""
    names = [run_name(r) for r in runs]
    counts = Counter(names)
    for i, run in enumerate(runs):
        if counts[names[i]] > 1:
            run_id = _parts(run)[0]
            clock = run_id[9:15]  # run ids start with YYYYmmdd-HHMMSS
            if len(clock) == 6 and clock.isdigit():
                names[i] = f"{names[i]} ({clock[:2]}:{clock[2:4]}:{clock[4:]})"
    seen: Counter = Counter()
    for i, name in enumerate(names):
        seen[name] += 1
        if seen[name] > 1:
            names[i] = f"{name} #{seen[name]}"
    return names


def dataset_name(spec: str | None) -> str:
    """A dataset spec for display: built-in names as they are, paths by their last part."""
    if not spec:
        return "?"
    return Path(spec).name if ("/" in spec or "\\" in spec) else spec


def _column(metrics: list[dict], key: str) -> tuple[list, list]:
    rows = [m for m in metrics if m.get(key) is not None]
    return [m.get("epoch", i + 1) for i, m in enumerate(rows)], [m[key] for m in rows]


def _epoch_axis(fig: go.Figure, n_epochs: int) -> None:
    # Whole epochs only; a short run would otherwise get ticks at 1.5, 2.5...
    fig.update_xaxes(title_text="epoch", tickmode="linear" if n_epochs <= 12 else "auto", dtick=1, tick0=1)


def _mode(n_points: int) -> str:
    return "lines+markers" if n_points <= 40 else "lines"  # markers only help while they are few


def curves_figure(metrics: list[dict], height: int = 300) -> go.Figure:
    """Loss and accuracy per epoch of one run, train dashed and validation solid, side by side."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"), horizontal_spacing=0.1)
    for col, metric in enumerate(("loss", "acc"), start=1):
        for color, split in zip(PALETTE, ("train", "val"), strict=False):
            x, y = _column(metrics, f"{split}_{metric}")
            fig.add_trace(
                go.Scatter(x=x, y=y, name=split, mode=_mode(len(x)), legendgroup=split, showlegend=col == 1,
                           line={"color": color, "dash": SPLIT_DASH[split]}),
                row=1, col=col,
            )
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    _epoch_axis(fig, len(metrics))
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def compare_figure(runs: Sequence[RunRecord | dict], metric: str = "acc", include_train: bool = False,
                   names: list[str] | None = None, height: int = 380) -> go.Figure:
    """One line per run of validation `metric` ("acc" or "loss") per epoch; train curves dashed."""
    if metric not in METRIC_TITLES:
        raise ValueError(f"unknown metric {metric!r}: choose one of {', '.join(METRIC_TITLES)}")
    names = names or run_names(runs)
    fig = go.Figure()
    longest = 0
    for i, (run, name) in enumerate(zip(runs, names, strict=True)):
        metrics = _parts(run)[3]
        longest = max(longest, len(metrics))
        color = PALETTE[i % len(PALETTE)]
        for split in ("val", "train") if include_train else ("val",):
            x, y = _column(metrics, f"{split}_{metric}")
            fig.add_trace(go.Scatter(
                x=x, y=y, mode=_mode(len(x)), legendgroup=name,
                name=name if split == "val" else f"{name} (train)",
                line={"color": color, "dash": SPLIT_DASH[split]},
            ))
    title = f"{'train and ' if include_train else ''}validation {METRIC_TITLES[metric]}"
    fig.update_layout(title_text=title, height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": -0.2})
    if metric == "acc":
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    else:
        fig.update_yaxes(rangemode="tozero")
    _epoch_axis(fig, longest)
    return fig


def epoch_table(runs: Sequence[RunRecord | dict], names: list[str] | None = None) -> pd.DataFrame:
    """Epoch by run: one row per epoch, `<run> val loss` and `<run> val acc` columns per run."""
    names = names or run_names(runs)
    columns = {}
    for run, name in zip(runs, names, strict=True):
        metrics = _parts(run)[3]
        for key, label in (("val_loss", "val loss"), ("val_acc", "val acc")):
            x, y = _column(metrics, key)
            columns[f"{name}: {label}"] = pd.Series(y, index=x, dtype="float64")
    table = pd.DataFrame(columns)
    table.index.name = "epoch"
    return table.sort_index()


SUMMARY_COLUMNS = ("run", "backbone", "strategy", "dataset", "status", "best val acc", "final val acc",
                   "best epoch", "epochs", "seconds", "trainable params", "total params", "run id")


def summary_table(runs: Sequence[RunRecord | dict], names: list[str] | None = None) -> pd.DataFrame:
    """One row per run: what it was, how well it did, how long it took, how big it was."""
    names = names or run_names(runs)
    rows = []
    for run, name in zip(runs, names, strict=True):
        run_id, config, status, metrics = _parts(run)
        accs = [m["val_acc"] for m in metrics if m.get("val_acc") is not None]
        # A run that ended early (cancelled, interrupted) has no summary: use its epochs so far.
        best = status.get("best_val_acc", max(accs) if accs else None)
        best_epoch = status.get("best_epoch") or (accs.index(max(accs)) + 1 if accs else None)
        seconds = status.get("seconds", sum(m.get("seconds", 0) for m in metrics) if metrics else None)
        rows.append({
            "run": name, "backbone": config.get("backbone"), "strategy": config.get("strategy"),
            "dataset": dataset_name(config.get("data")), "status": status.get("status", "unknown"),
            "best val acc": best, "final val acc": status.get("final_val_acc", accs[-1] if accs else None),
            "best epoch": best_epoch, "epochs": len(metrics), "seconds": seconds,
            "trainable params": status.get("trainable_params"), "total params": status.get("total_params"),
            "run id": run_id,
        })
    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    for col in ("best epoch", "trainable params", "total params"):
        table[col] = table[col].astype("Int64")
    for col in ("best val acc", "final val acc", "seconds"):
        table[col] = table[col].astype("float64")
    return table


def topk_figure(predictions: Sequence, title: str = "", height: int | None = None) -> go.Figure:
    """Horizontal bars of top-k probabilities, the most likely class on top.

    `predictions` are objects with `.label` and `.prob` (tlcore.predict.Prediction) or
    (label, prob) pairs.
    """
    pairs = [(p.label, p.prob) if hasattr(p, "label") else (p[0], p[1]) for p in predictions]
    labels = [label for label, _ in reversed(pairs)]
    probs = [prob for _, prob in reversed(pairs)]
    fig = go.Figure(go.Bar(
        x=probs, y=labels, orientation="h", text=[f"{p:.1%}" for p in probs], textposition="auto",
        hovertemplate="%{y}: %{x:.2%}<extra></extra>",
    ))
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=height or 90 + 32 * max(len(pairs), 1),
                      margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10})
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_yaxes(type="category", automargin=True)  # class names like "8" are names, not numbers
    return fig


def to_csv(table: pd.DataFrame) -> bytes:
    """A table as UTF-8 CSV bytes for a download button (the index kept when it is named)."""
    return table.to_csv(index=table.index.name is not None).encode("utf-8")
