"""Altair (Vega-Lite) charts and pandas tables built from runs: pure functions the pages only display.

A "run" here is either a `RunRecord` (from disk) or a snapshot dict from
`JobManager.snapshot` (live); both carry a config, a status and per-epoch metrics. Charts set
no background, font or grid colour, so `st.altair_chart(..., theme="streamlit")` draws them for the
light or the dark theme alike. Vega-Lite, not plotly: plotly's browser bundle cost about 1 s
of every page that drew a chart (issue 13).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import altair as alt
import pandas as pd

from tlcore.models.backbones import get_backbone
from tlcore.names import dataset_name  # re-exported: pages and ui.py take it from here
from tlcore.runs import RunRecord

# Vega's tableau10: distinct hues that read on a light and on a dark background (runs, splits).
PALETTE = ("#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d",
           "#bab0ac")
SPLIT_DASH = {"val": [1, 0], "train": [6, 4]}  # solid, dashed
METRIC_TITLES = {"acc": "accuracy", "loss": "loss"}
LABEL_GREY = "#808495"  # Streamlit's grey for chart labels: read on the light and the dark theme alike
STAR = "M0,-1L0.26,-0.36L0.95,-0.31L0.43,0.14L0.59,0.81L0,0.45L-0.59,0.81L-0.43,0.14L-0.95,-0.31L-0.26,-0.36Z"


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
    ("image_size", None, lambda v: f"{v} px" if v else "default size"),
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


def _epoch_x(xs) -> alt.X:
    """The epoch axis over `xs` (epochs, or fractions of one for live batches): whole epochs only.

    Its domain starts at a whole epoch and spans at least one, so a run in its first epoch gets
    ticks 0 and 1 and a short run no ticks at 1.5, 2.5... (d3 prints 0.5 as "1" in whole numbers).
    """
    xs = list(xs)
    lo = math.floor(min(xs, default=1))
    hi = max(math.ceil(max(xs, default=1)), lo + 1)
    # Padded so the first and last points (a star is 14 px wide) are not cut by the plot's edges.
    return alt.X("epoch:Q", title="epoch", scale=alt.Scale(domain=[lo, hi], nice=False, padding=10),
                 axis=alt.Axis(tickMinStep=1, format="d"))


def _points(n_points: int) -> alt.OverlayMarkDef:
    """Points on a line: they carry its hover tooltips; drawn only while few, else hover-only (transparent)."""
    return alt.OverlayMarkDef(filled=True, size=40 if n_points <= 40 else 20, opacity=1 if n_points <= 40 else 0)


LEGEND_WRAP = 60  # characters per legend line: a long label wraps at " · " instead of running off the chart


def legend_name(name: str, width: int = LEGEND_WRAP) -> str:
    """A run label for a legend: wrapped onto lines of about `width` characters at its " · " breaks
    (lines joined by newlines; `_wrapped` makes Vega draw them as lines)."""
    lines = [""]
    for part in name.split(" · "):
        if lines[-1] and len(lines[-1]) + 3 + len(part) > width:
            lines.append(part)
        else:
            lines[-1] = f"{lines[-1]} · {part}" if lines[-1] else part
    return "\n".join(lines)


def _wrapped(**legend) -> alt.Legend:
    """A legend whose labels are drawn on the lines `legend_name` chose, each line whole unless
    wider than the plot (a narrow column), then cut with an ellipsis, never clipped."""
    return alt.Legend(labelExpr="split(datum.label, '\\n')", labelLimit=alt.ExprRef("max(width - 20, 60)"),
                      **legend)


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


LIVE = "train batches (live)"
CURVE_SERIES = ("train", LIVE, "val")
# Per series: line colour, dash, width, and the opacity of its points (the live trail's many batch
# points only carry tooltips).
CURVE_STYLE = {"color": (PALETTE[0], "#9ecae9", PALETTE[1]), "strokeDash": ([6, 4], [1, 0], [1, 0]),
               "strokeWidth": (2, 1, 2), "fillOpacity": (1, 0, 1)}


def _value_format(metric: str) -> str:
    return ".1%" if metric == "acc" else ".4f"


def _series_style(legend: alt.Legend) -> dict:
    """The encodings of `CURVE_STYLE`: channels on one field, so one legend shows them all.

    Ordinal scales map each series to its own value: Vega-Lite's default for a nominal width or
    opacity spread the range's ends over the series (val drawn thin and without points).
    """
    return {name: getattr(alt, name[0].upper() + name[1:])("series:N", title=None, legend=legend, scale=alt.Scale(
        type="ordinal", domain=list(CURVE_SERIES), range=list(values))) for name, values in CURVE_STYLE.items()}


def curves_figure(metrics: list[dict], height: int = 130, live: list[tuple[float, float]] | None = None
                  ) -> alt.VConcatChart:
    """Loss over accuracy per epoch of one run on one epoch axis, train dashed and validation solid.

    `live`: (x in epochs, loss) of the training batches the page saw, drawn as a thin light line
    on the loss plot so a running run shows progress inside an epoch. `height` is each plot's;
    the legend below adds to it. The plots fill the width of their container: stacked, not side
    by side, because Streamlit draws side-by-side (hconcat) charts at a fixed width, which ran
    off a run card on a 1,000 px wide window.
    """
    rows = [{"metric": metric, "series": split, "epoch": x, "value": y}
            for metric in ("loss", "acc") for split in ("train", "val")
            for x, y in zip(*_column(metrics, f"{split}_{metric}"), strict=True)]
    rows += [{"metric": "loss", "series": LIVE, "epoch": x, "value": y} for x, y in live or ()]
    frame = pd.DataFrame(rows, columns=["metric", "series", "epoch", "value"])
    # Long stroke symbols, so the legend shows the dash of the train line.
    legend = alt.Legend(orient="bottom", direction="horizontal", symbolType="stroke", symbolSize=400,
                        values=[s for s in CURVE_SERIES if s != LIVE or live])
    x = _epoch_x(frame["epoch"])

    def panel(metric: str, x: alt.X) -> alt.Chart:
        y_scale = alt.Scale(domain=[0, 1.02], nice=False) if metric == "acc" else alt.Scale(zero=True)
        return alt.Chart(frame).transform_filter(alt.datum.metric == metric).mark_line(
            point=_points(len(metrics))).encode(
            x=x, y=alt.Y("value:Q", title=METRIC_TITLES[metric], scale=y_scale,
                         axis=alt.Axis(format=".0%") if metric == "acc" else alt.Axis()),
            tooltip=[alt.Tooltip("series:N"), alt.Tooltip("epoch:Q", format=".2~f"),
                     alt.Tooltip("value:Q", title=METRIC_TITLES[metric], format=_value_format(metric))],
            **_series_style(legend)).properties(height=height)

    # One epoch axis under both plots: the upper one keeps its grid but not the axis' title.
    return alt.vconcat(panel("loss", x.title(None)), panel("acc", x), spacing=8)


def _compare_rows(runs: Sequence[RunRecord | dict], names: list[str], metric: str,
                  splits: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, stars): a row per run, split and epoch; a row per run at the epoch it kept."""
    lines, stars = [], []
    for run, name in zip(runs, names, strict=True):
        metrics, shown = _parts(run)[3], legend_name(name)
        for split in splits:
            lines += [{"run": name, "legend": shown, "split": split, "epoch": e, "value": v}
                      for e, v in zip(*_column(metrics, f"{split}_{metric}"), strict=True)]
        best = best_epoch(run)
        at = [m.get(f"val_{metric}") for m in metrics if m.get("epoch") == best]
        if at and at[0] is not None:
            stars.append({"run": name, "legend": shown, "epoch": best, "value": at[0]})
    return (pd.DataFrame(lines, columns=["run", "legend", "split", "epoch", "value"]),
            pd.DataFrame(stars, columns=["run", "legend", "epoch", "value"]))


def _compare_y(metric: str, values: list[float], full_range: bool) -> alt.Y:
    title = METRIC_TITLES[metric]
    if metric == "loss":
        return alt.Y("value:Q", title=title, scale=alt.Scale(zero=True))
    rng = _acc_range(values, full_range)
    # Whole percents repeat on a narrow fitted axis (ticks 0.5 points apart read "24%, 24%"): one decimal there.
    return alt.Y("value:Q", title=title, scale=alt.Scale(domain=rng, nice=False),
                 axis=alt.Axis(format=".0%" if rng[1] - rng[0] >= 0.1 else ".1%"))


def compare_figure(runs: Sequence[RunRecord | dict], metric: str = "acc", include_train: bool = False,
                   names: list[str] | None = None, height: int = 300, full_range: bool = False) -> alt.LayerChart:
    """One line per run of validation `metric` ("acc" or "loss") per epoch.

    Each run has one colour and one legend entry (below the plot, long labels on several lines);
    with `include_train` its train curve is the same colour, dashed. A star marks the epoch each
    run kept (its best validation accuracy); the subtitle says what the line styles and the star
    mean. The accuracy axis is fitted to the data unless `full_range` (0-100%). `height` is the
    plot's; the legend adds to it. The chart fills its column's width.
    """
    if metric not in METRIC_TITLES:
        raise ValueError(f"unknown metric {metric!r}: choose one of {', '.join(METRIC_TITLES)}")
    names = names or run_names(runs)
    lines, stars = _compare_rows(runs, names, metric, ("val", "train") if include_train else ("val",))
    y = _compare_y(metric, list(lines["value"]), full_range)
    color = alt.Color("legend:N", title=None, sort=None,
                      scale=alt.Scale(domain=[legend_name(n) for n in names],
                                      range=[PALETTE[i % len(PALETTE)] for i in range(len(names))]),
                      legend=_wrapped(orient="bottom", direction="vertical", symbolType="stroke", columns=1))
    value = alt.Tooltip("value:Q", title=METRIC_TITLES[metric], format=_value_format(metric))
    style = {"color": color}
    if include_train:  # a legend keyed on the dash drew no line in its symbols: the subtitle explains the dash
        style["strokeDash"] = alt.StrokeDash("split:N", legend=None, scale=alt.Scale(
            domain=list(SPLIT_DASH), range=list(SPLIT_DASH.values())))
    curves = alt.Chart(lines).mark_line(point=_points(lines["epoch"].nunique())).encode(
        x=_epoch_x(lines["epoch"]), y=y, tooltip=["run:N", "split:N", alt.Tooltip("epoch:Q", format="d"), value], **style)
    best = alt.Chart(stars).mark_point(shape=STAR, filled=True, size=160, opacity=1, stroke="white",
                                       strokeWidth=0.5).encode(
        x=_epoch_x(lines["epoch"]), y=y, color=color, tooltip=["run:N", alt.Tooltip("epoch:Q", title="best epoch"), value])
    # Short lines: a long subtitle is cut to the width of a narrow column.
    key = ["solid: validation · dashed: train"] if include_train else []
    return alt.layer(curves, best).properties(
        title=alt.Title(f"{'train and ' if include_train else ''}validation {METRIC_TITLES[metric]}",
                        subtitle=[*key, "★ best epoch (the weights the run kept)"], anchor="start",
                        subtitleColor=LABEL_GREY),  # Streamlit's theme colours the title, not the subtitle
        height=height, autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))


# Validation first: what runs are compared on. Metric-major, so one metric's runs sit side by side.
EPOCH_COLUMNS = (("val_acc", "val acc"), ("val_loss", "val loss"), ("train_acc", "train acc"),
                 ("train_loss", "train loss"))


def epoch_table(runs: Sequence[RunRecord | dict], names: list[str] | None = None) -> pd.DataFrame:
    """Epoch by run: one row per epoch; a column `<metric> · <run>` per metric, then per run.

    The metric leads the header: a narrow column cuts the end of a long run label, and the
    metric must stay readable (QA at 1000 px saw "simple_cnn + … seed 0 ·" twice, no metric).
    """
    names = names or run_names(runs)
    columns = {}
    for key, label in EPOCH_COLUMNS:
        for run, name in zip(runs, names, strict=True):
            x, y = _column(_parts(run)[3], key)
            columns[f"{label} · {name}"] = pd.Series(y, index=x, dtype="float64")
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


def topk_figure(predictions: Sequence, title: str = "", height: int | None = None) -> alt.LayerChart:
    """Horizontal bars of top-k probabilities, the most likely class on top, each bar's percentage
    written in it (or beside it when the bar is short).

    `predictions` are objects with `.label` and `.prob` (tlcore.predict.Prediction) or
    (label, prob) pairs. `height`: the plot's, 28 px a class by default.
    """
    pairs = [(p.label, p.prob) if hasattr(p, "label") else (p[0], p[1]) for p in predictions]
    frame = pd.DataFrame({"class": [str(label) for label, _ in pairs], "prob": [float(prob) for _, prob in pairs],
                          "text": [f"{prob:.1%}" for _, prob in pairs]})
    # Class names like "8" are names, not numbers: a nominal axis, in the predictions' own order.
    base = alt.Chart(frame).encode(
        y=alt.Y("class:N", title=None, sort=list(frame["class"]), axis=alt.Axis(labelLimit=220)),
        x=alt.X("prob:Q", title="probability", scale=alt.Scale(domain=[0, 1], nice=False),
                axis=alt.Axis(format=".0%")),
        tooltip=[alt.Tooltip("class:N"), alt.Tooltip("prob:Q", title="probability", format=".2%")],
        text="text:N",
    )
    bars = base.mark_bar(color=PALETTE[0])
    inside = base.transform_filter(alt.datum.prob >= 0.25).mark_text(align="right", dx=-4, color="white")
    # Beside a bar in Streamlit's grey for chart labels, read on either theme (Vega's default black
    # vanished on the dark one).
    beside = base.transform_filter(alt.datum.prob < 0.25).mark_text(align="left", dx=4, color=LABEL_GREY)
    return alt.layer(bars, inside, beside).properties(
        title=alt.Title(title, fontSize=14, anchor="start"), height=height or 28 * max(len(pairs), 1),
        autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))


def to_csv(table: pd.DataFrame) -> bytes:
    """A table as UTF-8 CSV bytes for a download button (the index kept when it is named)."""
    return table.to_csv(index=table.index.name is not None).encode("utf-8")
