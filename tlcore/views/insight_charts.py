"""Figures and tables for model insight: the confusion matrix, the report's tables, the LR finder.

Pure functions over `report.Interpretation` and `lr_find.LRFinderResult`; the pages only show
what they return.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from tlcore.analysis.lr_find import LRFinderResult
from tlcore.analysis.report import Interpretation


def confusion_figure(interp: Interpretation, normalize: bool = False) -> go.Figure:
    """Heatmap of actual (rows, top to bottom) x predicted (columns), class names on both axes."""
    cm = interp.confusion(normalize)
    counts = interp.confusion()
    text = [[f"{v:.0%}" if normalize else str(int(v)) for v in row] for row in cm]
    n = len(interp.classes)
    fig = go.Figure(go.Heatmap(
        z=cm, x=interp.classes, y=interp.classes, text=text, texttemplate="%{text}", colorscale="Blues",
        zmin=0, zmax=1 if normalize else max(1, int(cm.max())), hoverinfo="skip",
        colorbar={"title": {"text": "share of row" if normalize else "images"}},
    ))
    # Heatmap cells cannot be selected in st.plotly_chart; an invisible marker on each cell can,
    # so a click on a cell reports its (predicted, actual) as the point's (x, y).
    fig.add_trace(go.Scatter(
        x=[c for _ in range(n) for c in interp.classes], y=[c for c in interp.classes for _ in range(n)],
        customdata=counts.flatten(), mode="markers", showlegend=False,
        marker={"symbol": "square", "size": 30, "opacity": 0},
        hovertemplate="actual %{y}<br>predicted %{x}<br>%{customdata} images<extra></extra>",
    ))
    side = min(720, 220 + 40 * len(interp.classes))
    fig.update_layout(height=side, margin={"l": 10, "r": 10, "t": 36, "b": 10})  # t: room for the toolbar
    # Class names like "8" are names, not numbers; the first class on top, as in a table.
    fig.update_xaxes(title="predicted", type="category", side="bottom", automargin=True)
    fig.update_yaxes(title="actual", type="category", autorange="reversed", automargin=True)
    return fig


def per_class_table(interp: Interpretation) -> pd.DataFrame:
    """Precision, recall, F1 and support per class."""
    return pd.DataFrame(interp.per_class(), columns=["class", "precision", "recall", "f1", "support"])


def most_confused_table(interp: Interpretation) -> pd.DataFrame:
    """Actual -> predicted pairs with their counts, largest first."""
    return pd.DataFrame(interp.most_confused(), columns=["actual", "predicted", "count"])


def cells(interp: Interpretation) -> list[tuple[str, str, int]]:
    """Every non-empty confusion cell as (actual, predicted, count): mistakes first, then the diagonal."""
    cm = interp.confusion()
    out = [(interp.classes[a], interp.classes[p], int(cm[a, p]))
           for a in range(len(interp.classes)) for p in range(len(interp.classes)) if cm[a, p]]
    return sorted(out, key=lambda c: (c[0] == c[1], -c[2]))


def lr_find_figure(result: LRFinderResult) -> go.Figure:
    """Smoothed loss against learning rate (log axis), the suggestion marked."""
    fig = go.Figure(go.Scatter(x=result.lrs, y=result.losses, mode="lines", name="loss",
                               hovertemplate="lr %{x:.2e}<br>loss %{y:.4f}<extra></extra>"))
    best = min(range(len(result.lrs)), key=lambda i: abs(result.lrs[i] - result.suggested_lr))
    fig.add_trace(go.Scatter(x=[result.suggested_lr], y=[result.losses[best]], mode="markers", name="suggestion",
                             marker={"size": 12, "symbol": "circle-open", "line": {"width": 3}},
                             hovertemplate="suggested lr %{x:.2e}<extra></extra>"))
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 10, "b": 10}, showlegend=False)
    fig.update_xaxes(type="log", title="learning rate", exponentformat="power")
    fig.update_yaxes(title="loss (smoothed)")
    return fig


def clicked_cell(event) -> tuple[str, str] | None:
    """(actual, predicted) of the confusion cell clicked in `st.plotly_chart(..., on_select="rerun")`."""
    points = ((event or {}).get("selection") or {}).get("points") or []
    if not points or "x" not in points[0] or "y" not in points[0]:
        return None
    return str(points[0]["y"]), str(points[0]["x"])
