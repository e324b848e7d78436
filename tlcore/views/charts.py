"""Plotly figures and pandas tables built from runs: pure functions the pages only display.

A "run" here is either a `RunRecord` (from disk) or a snapshot dict from
`JobManager.snapshot` (live); both carry a config, a status and per-epoch metrics. Figures set
no template, so `st.plotly_chart(..., theme="streamlit")` colours them for the light or the
dark theme alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from tlcore.models.backbones import get_backbone
from tlcore.names import dataset_name  # re-exported: pages and ui.py take it from here
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
    """`backbone + strategy`: what every run's label starts with."""
    _, config, _, _ = _parts(run)
    return f"{config.get('backbone')} + {config.get('strategy')}"


def _given_name(run: RunRecord | dict) -> str:
    return (run.get("name") if isinstance(run, dict) else run.name) or ""


def epochs_text(n: int) -> str:
    """`1 epoch`, `3 epochs`."""
    return f"{n} epoch{'' if n == 1 else 's'}"


# What a label adds to `backbone + strategy` when the runs shown differ in it, in this order:
# (config key, when it applies (None: always), how to show it).
LABEL_PARTS = (
    ("data", None, lambda v: dataset_name(v)),
    ("image_size", None, lambda v: f"{v} px" if v else "default px"),
    ("subset", None, lambda v: f"{v}/class" if v else "all images"),
    ("lr", None, lambda v: f"lr {v:g}"),
    ("optimizer", None, str),
    ("head", None, lambda v: f"{v} head"),
    ("hidden", lambda c: c.get("head") == "mlp", lambda v: "-".join(map(str, v)) if v else "1024-1024-512"),
    ("epochs", None, epochs_text),
    ("batch_size", None, lambda v: f"batch {v}"),
    ("augment", None, lambda v: f"augment {v}"),
    ("schedule", None, lambda v: f"{v} schedule"),
    ("weight_decay", None, lambda v: f"wd {v:g}"),
    ("unfreeze_groups", lambda c: c.get("strategy") == "partial", lambda v: f"last {v} groups"),
    ("lr_factor", lambda c: c.get("strategy") in ("discriminative", "gradual"), lambda v: f"lr factor {v:g}"),
    ("head_epochs", lambda c: c.get("strategy") == "gradual", lambda v: f"{v} head epochs"),
    ("val_fraction", None, lambda v: f"val {v:.0%}"),
    ("seed", None, lambda v: f"seed {v}"),
)


def _part(config: dict, key: str, applies) -> tuple[bool, object]:
    """(applies, value) of one label part; lists become tuples so values can be compared."""
    if applies is not None and not applies(config):
        return False, None
    value = config.get(key)
    return True, tuple(value) if isinstance(value, list) else value


def run_names(runs: Sequence[RunRecord | dict]) -> list[str]:
    """One label per run, unique among `runs`: the user's name, else what tells it from the others.

    `backbone + strategy`, then each setting the runs do not all share (dataset, image size,
    images per class, learning rate, head, epochs...), e.g. `resnet18 + finetune · cats.zip ·
    lr 0.0001`; runs alike in all of these get their start time, then a number. Pass the
    same set of runs on every page (all runs of the folder) and a run has one label everywhere.
    """
    configs = [_parts(r)[1] for r in runs]
    # Once per setting, not per run: with thousands of runs a per-run pass over all runs took seconds.
    varies = {key: len({_part(c, key, applies) for c in configs}) > 1 for key, applies, _ in LABEL_PARTS}
    names = []
    for config in configs:
        parts = [run_name({"config": config})]
        for key, applies, show in LABEL_PARTS:
            applied, value = _part(config, key, applies)
            if varies[key] and applied:
                try:
                    parts.append(show(value))
                except (TypeError, ValueError):  # a hand-edited config: show it as it is
                    parts.append(f"{key} {value}")
        names.append(" · ".join(parts))
    names = [_given_name(r) or name for r, name in zip(runs, names, strict=True)]
    counts = Counter(names)
    for i, run in enumerate(runs):
        if counts[names[i]] > 1 and not _given_name(run):
            clock = _parts(run)[0][9:15]  # run ids start with YYYYmmdd-HHMMSS
            if len(clock) == 6 and clock.isdigit():
                names[i] = f"{names[i]} · {clock[:2]}:{clock[2:4]}:{clock[4:]}"
    seen: Counter = Counter()
    for i, name in enumerate(names):
        seen[name] += 1
        if seen[name] > 1:
            names[i] = f"{name} #{seen[name]}"
    return names


def _column(metrics: list[dict], key: str) -> tuple[list, list]:
    rows = [m for m in metrics if m.get(key) is not None]
    return [m.get("epoch", i + 1) for i, m in enumerate(rows)], [m[key] for m in rows]


def _epoch_axis(fig: go.Figure, n_epochs: int) -> None:
    # Whole epochs only; a short run would otherwise get ticks at 1.5, 2.5...
    fig.update_xaxes(title_text="epoch", tickmode="linear" if n_epochs <= 12 else "auto", dtick=1, tick0=1)


def _mode(n_points: int) -> str:
    return "lines+markers" if n_points <= 40 else "lines"  # markers only help while they are few


LEGEND_ROW_PX = 21  # one legend entry, font 12, with its spacing


def _legend_below(fig: go.Figure, entries: int, plot_height: int, top: int, columns: int = 1) -> None:
    """Put the legend under the plot, in a bottom margin sized for it.

    The margin holds the x-axis ticks and title first, then the legend: it never covers the
    axis title or the lines, and ten runs fit without a scrollbar (the figure grows instead).
    """
    rows = -(-entries // columns)
    bottom = 50 + LEGEND_ROW_PX * rows + 8
    fig.update_layout(
        height=plot_height + top + bottom, margin={"l": 10, "r": 10, "t": top, "b": bottom},
        legend={"orientation": "v" if columns == 1 else "h", "yref": "container", "yanchor": "bottom", "y": 0,
                "xanchor": "left", "x": 0, "font": {"size": 12}, "tracegroupgap": 0},
    )


LEGEND_WRAP = 60  # characters per legend line: a long label wraps at " · " instead of running off the chart


def legend_name(name: str, width: int = LEGEND_WRAP) -> str:
    """A run label for a legend: wrapped onto lines of about `width` characters at its " · " breaks."""
    lines = [""]
    for part in name.split(" · "):
        if lines[-1] and len(lines[-1]) + 3 + len(part) > width:
            lines.append(part)
        else:
            lines[-1] = f"{lines[-1]} · {part}" if lines[-1] else part
    return "<br>".join(lines)


def _key(fig: go.Figure, name: str, **style) -> None:
    """A legend-only entry explaining a line style or a marker (no data)."""
    fig.add_trace(go.Scatter(x=[None], y=[None], name=name, hoverinfo="skip", **style))


def _acc_range(values: list[float], full: bool) -> list[float]:
    """0-100% when asked, else fitted to the data with a margin (runs at 80-100% are not squashed)."""
    if full or not values:
        return [0, 1.02]
    lo, hi = min(values), max(values)
    pad = max(0.02, 0.08 * (hi - lo))
    return [max(0.0, lo - pad), min(1.0, hi) + pad]


def best_epoch(run: RunRecord | dict) -> int | None:
    """The epoch whose weights a run kept (its best validation accuracy), or None before any."""
    _, _, status, metrics = _parts(run)
    accs = [(m["val_acc"], m.get("epoch", i + 1)) for i, m in enumerate(metrics) if m.get("val_acc") is not None]
    if status.get("best_epoch"):
        return status["best_epoch"]
    return max(accs, key=lambda a: a[0])[1] if accs else None  # max() keeps the first of equals


def curves_figure(metrics: list[dict], height: int = 240, live: list[tuple[float, float]] | None = None) -> go.Figure:
    """Loss and accuracy per epoch of one run, train dashed and validation solid, side by side.

    `live`: (x in epochs, loss) of training batches since the last epoch ended, drawn as a thin
    line on the loss plot so a running run shows progress inside an epoch.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"), horizontal_spacing=0.1)
    for col, metric in enumerate(("loss", "acc"), start=1):
        for color, split in zip(PALETTE, ("train", "val"), strict=False):
            x, y = _column(metrics, f"{split}_{metric}")
            fig.add_trace(
                go.Scatter(x=x, y=y, name=split, mode=_mode(len(x)), legendgroup=split, showlegend=col == 1,
                           line={"color": color, "dash": SPLIT_DASH[split]}),
                row=1, col=col,
            )
    if live:
        fig.add_trace(go.Scatter(x=[x for x, _ in live], y=[y for _, y in live], name="train batches (live)",
                                 mode="lines", line={"color": PALETTE[0], "width": 1}, opacity=0.5),
                      row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    _epoch_axis(fig, max(len(metrics), int(max((x for x, _ in live), default=0)) + 1 if live else 0))
    _legend_below(fig, 3 if live else 2, height, top=30, columns=3)
    return fig


def compare_figure(runs: Sequence[RunRecord | dict], metric: str = "acc", include_train: bool = False,
                   names: list[str] | None = None, height: int = 320, full_range: bool = False) -> go.Figure:
    """One line per run of validation `metric` ("acc" or "loss") per epoch.

    Each run has one colour and one legend entry; with `include_train` its train curve is the
    same colour, dashed, and two grey legend keys say which style is which split. A star marks
    the epoch each run kept (its best validation accuracy). The accuracy axis is fitted to
    the data unless `full_range` (0-100%). `height` is the plot's; the legend below adds to it.
    """
    if metric not in METRIC_TITLES:
        raise ValueError(f"unknown metric {metric!r}: choose one of {', '.join(METRIC_TITLES)}")
    names = names or run_names(runs)
    fig = go.Figure()
    longest, plotted, legend_rows = 0, [], 0
    splits = ("val", "train") if include_train else ("val",)
    for i, (run, name) in enumerate(zip(runs, names, strict=True)):
        metrics = _parts(run)[3]
        longest = max(longest, len(metrics))
        color = PALETTE[i % len(PALETTE)]
        shown = legend_name(name)
        legend_rows += shown.count("<br>") + 1
        for split in splits:
            x, y = _column(metrics, f"{split}_{metric}")
            plotted += y
            fig.add_trace(go.Scatter(
                x=x, y=y, mode=_mode(len(x)), legendgroup=name, showlegend=split == "val",
                name=shown if split == "val" else f"{name} (train)",
                line={"color": color, "dash": SPLIT_DASH[split]},
            ))
        best = best_epoch(run)
        at = [m.get(f"val_{metric}") for m in metrics if m.get("epoch") == best]
        if at and at[0] is not None:
            fig.add_trace(go.Scatter(
                x=[best], y=at, mode="markers", legendgroup=name, showlegend=False, name=f"{name}: best epoch",
                marker={"symbol": "star", "size": 14, "color": color, "line": {"width": 1, "color": "white"}},
                hovertemplate=f"best epoch %{{x}}: %{{y:{'.1%' if metric == 'acc' else '.4f'}}}<extra>{name}</extra>",
            ))
    keys = 1
    if include_train:
        _key(fig, "val (solid)", mode="lines", line={"color": "gray", "dash": "solid"})
        _key(fig, "train (dashed)", mode="lines", line={"color": "gray", "dash": "dash"})
        keys += 2
    _key(fig, "best epoch", mode="markers", marker={"symbol": "star", "size": 12, "color": "gray"})
    title = f"{'train and ' if include_train else ''}validation {METRIC_TITLES[metric]}"
    fig.update_layout(title_text=title)
    _legend_below(fig, legend_rows + keys, height, top=40)
    if metric == "acc":
        rng = _acc_range(plotted, full_range)
        # Whole percents repeat on a narrow fitted axis (ticks 0.5 points apart read "24%, 24%"): one decimal there.
        fig.update_yaxes(range=rng, tickformat=".0%" if rng[1] - rng[0] >= 0.1 else ".1%")
    else:
        fig.update_yaxes(rangemode="tozero")
    _epoch_axis(fig, longest)
    return fig


EPOCH_COLUMNS = (("train_loss", "train loss"), ("train_acc", "train acc"), ("val_loss", "val loss"),
                 ("val_acc", "val acc"))


def epoch_table(runs: Sequence[RunRecord | dict], names: list[str] | None = None) -> pd.DataFrame:
    """Epoch by run: one row per epoch; per run `<run>: train loss`, `train acc`, `val loss`, `val acc`."""
    names = names or run_names(runs)
    columns = {}
    for run, name in zip(runs, names, strict=True):
        metrics = _parts(run)[3]
        for key, label in EPOCH_COLUMNS:
            x, y = _column(metrics, key)
            columns[f"{name}: {label}"] = pd.Series(y, index=x, dtype="float64")
    table = pd.DataFrame(columns)
    table.index.name = "epoch"
    return table.sort_index()


def _number_format(column: str, values: pd.Series) -> str:
    if "acc" in column:
        return "{:.1%}"
    if "loss" in column:
        return "{:.4f}"
    if column == "seconds":
        return "{:.1f}"
    if values.dtype.kind == "f":
        return "{:g}"
    return "{:,}" if "params" in column else "{}"


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """A table's numbers as text for the page: accuracies in %, losses to 4 places, nothing where
    a value is missing (a shorter run, a run cancelled early) instead of "None"."""
    out = table.copy()
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]):
            out[col] = out[col].map(lambda v: "" if v is None or v is pd.NA or v != v else str(v))
            continue
        fmt = _number_format(str(col), out[col])
        out[col] = out[col].map(lambda v, fmt=fmt: "" if pd.isna(v) else fmt.format(v))
    return out


SUMMARY_COLUMNS = ("run", "status", "best val acc", "best epoch", "final val acc", "epochs", "seconds", "dataset",
                   "image size", "images per class", "lr", "head", "train images", "val images", "backbone",
                   "strategy", "trainable params", "total params", "run id")


def _image_size(config: dict) -> int | None:
    """The size a run's images were resized to: its own, else its backbone's default."""
    if config.get("image_size"):
        return config["image_size"]
    try:
        return get_backbone(config.get("backbone")).input_size
    except ValueError:
        return None


def summary_table(runs: Sequence[RunRecord | dict], names: list[str] | None = None) -> pd.DataFrame:
    """One row per run: how well it did and how long it took first, then what it was."""
    names = names or run_names(runs)
    rows = []
    for run, name in zip(runs, names, strict=True):
        run_id, config, status, metrics = _parts(run)
        accs = [m["val_acc"] for m in metrics if m.get("val_acc") is not None]
        # A run that ended early (cancelled, interrupted) has no summary: use its epochs so far.
        best = status.get("best_val_acc", max(accs) if accs else None)
        seconds = status.get("seconds", sum(m.get("seconds", 0) for m in metrics) if metrics else None)
        head = config.get("head")
        if head == "mlp":
            head = f"mlp {'-'.join(map(str, config.get('hidden') or ())) or '1024-1024-512'}"
        rows.append({
            "run": name, "status": status.get("status", "unknown"), "best val acc": best, "best epoch": best_epoch(run),
            "final val acc": status.get("final_val_acc", accs[-1] if accs else None), "epochs": len(metrics),
            "seconds": seconds, "dataset": dataset_name(config.get("data")), "image size": _image_size(config),
            "images per class": str(config["subset"]) if config.get("subset") else "all", "lr": config.get("lr"),
            "head": head, "train images": status.get("num_train"), "val images": status.get("num_val"),
            "backbone": config.get("backbone"), "strategy": config.get("strategy"),
            "trainable params": status.get("trainable_params"), "total params": status.get("total_params"),
            "run id": run_id,
        })
    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    for col in ("best epoch", "image size", "train images", "val images", "trainable params", "total params"):
        table[col] = table[col].astype("Int64")
    for col in ("best val acc", "final val acc", "seconds", "lr"):
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
