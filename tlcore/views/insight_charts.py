"""Figures and tables for model insight: the confusion matrix, the report's tables, the LR finder.

Pure functions over `report.Interpretation` and `lr_find.LRFinderResult`; the pages only show
what they return.
"""

from __future__ import annotations

import math

import altair as alt
import pandas as pd

from tlcore.analysis.lr_find import LRFinderResult
from tlcore.analysis.report import Interpretation

CELL_SELECTION = "cell"  # the confusion chart's point selection: Streamlit's event names it


def confusion_figure(interp: Interpretation, normalize: bool = False) -> alt.LayerChart:
    """Heatmap of actual (rows, first class on top) x predicted (columns), the value written in each cell.

    A click on a cell selects it (`CELL_SELECTION`); `clicked_cell` reads it back from Streamlit's event.
    """
    cm, counts, n = interp.confusion(normalize), interp.confusion(), len(interp.classes)
    top = 1.0 if normalize else max(1, int(cm.max()))
    frame = pd.DataFrame([{"actual": a, "predicted": p, "images": int(counts[i, j]), "value": float(cm[i, j]),
                           "label": f"{cm[i, j]:.0%}" if normalize else str(int(cm[i, j]))}
                          for i, a in enumerate(interp.classes) for j, p in enumerate(interp.classes)])
    pick = alt.selection_point(name=CELL_SELECTION, fields=["actual", "predicted"])
    title = "share of row" if normalize else "images"
    tooltip = [alt.Tooltip("actual:N"), alt.Tooltip("predicted:N"), alt.Tooltip("images:Q")]
    if normalize:
        tooltip.append(alt.Tooltip("value:Q", title="share of row", format=".0%"))
    font = 11 if n <= 20 else 9  # a row of a 560 px matrix is 15 px at 30 classes
    long_names = n * max(len(c) for c in interp.classes) > 48  # about what a column's width holds flat
    # Class names like "8" are names, not numbers: nominal axes in the classes' own order, first on top.
    base = alt.Chart(frame).encode(
        # Every class named (Vega-Lite would drop labels that overlap); long names turned to fit.
        x=alt.X("predicted:N", sort=interp.classes, title="predicted",
                axis=alt.Axis(labelAngle=(-90 if n > 15 else -45) if long_names else 0, labelOverlap=False,
                              labelFontSize=font)),
        y=alt.Y("actual:N", sort=interp.classes, title="actual", axis=alt.Axis(labelOverlap=False, labelFontSize=font)),
    )
    cells = base.mark_rect().encode(
        tooltip=tooltip,
        color=alt.Color("value:Q", title=title, scale=alt.Scale(scheme="blues", domain=[0, top]),
                        legend=alt.Legend(format=".0%" if normalize else "d", orient="right")),
        # The picked cell keeps an outline, so the gallery's cell is visible on the matrix too.
        stroke=alt.condition(pick, alt.value("#ff4b4b"), alt.value(None), empty=False),
        strokeWidth=alt.condition(pick, alt.value(3), alt.value(0), empty=False),
    ).add_params(pick)
    # Dark text on light cells, white on dark ones: readable whatever Streamlit's theme. No tooltip
    # of its own: Vega-Lite then draws the text not interactive, so a click on a cell's number
    # reaches the cell under it and selects it (with a tooltip the text took the click).
    text = base.mark_text(fontSize=max(7, min(13, 200 // n))).encode(
        text="label:N", color=alt.condition(alt.datum.value > top / 2, alt.value("white"), alt.value("black")))
    # The column's width (cells of a discrete axis are a fixed step otherwise), the height grows with the classes.
    return alt.layer(cells, text).properties(width="container", height=min(560, max(280, 140 + 30 * n)))


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


def lr_find_figure(result: LRFinderResult) -> alt.LayerChart:
    """Smoothed loss against learning rate (log axis), the suggestion marked."""
    frame = pd.DataFrame({"lr": result.lrs, "loss": result.losses})
    best = min(range(len(result.lrs)), key=lambda i: abs(result.lrs[i] - result.suggested_lr))
    # Ticks and grid at the decades only: Vega-Lite's log axis draws a line at every 2..9 in between.
    decades = [10.0**k for k in range(math.floor(math.log10(min(result.lrs))), math.ceil(math.log10(max(result.lrs))) + 1)]
    x = alt.X("lr:Q", title="learning rate", scale=alt.Scale(type="log"), axis=alt.Axis(format=".0e", values=decades))
    y = alt.Y("loss:Q", title="loss (smoothed)", scale=alt.Scale(zero=False))
    tooltip = [alt.Tooltip("lr:Q", title="lr", format=".2e"), alt.Tooltip("loss:Q", format=".4f")]
    curve = alt.Chart(frame).encode(x=x, y=y)
    line = curve.mark_line()
    # A line's tooltip names one point only; a transparent point per step gives each its own.
    hover = curve.mark_point(size=60, opacity=0, filled=True).encode(tooltip=tooltip)
    marked = alt.Chart(pd.DataFrame({"lr": [result.suggested_lr], "loss": [result.losses[best]]})).encode(
        x=x, y=y, tooltip=[alt.Tooltip("lr:Q", title="suggested lr", format=".2e")])
    rule = marked.mark_rule(strokeDash=[4, 4], opacity=0.6).encode(y=alt.value(0), y2=alt.value("height"))
    point = marked.mark_point(size=160, strokeWidth=3, filled=False)
    return alt.layer(line, hover, rule, point).properties(height=320)


def clicked_cell(event) -> tuple[str, str] | None:
    """(actual, predicted) of the confusion cell clicked in `st.altair_chart(..., on_select="rerun")`.

    Streamlit returns a point selection with fields as `{"selection": {"cell": [{"actual": ..., "predicted":
    ...}]}}`, and `{}` in place of the list when nothing is selected.
    """
    points = ((event or {}).get("selection") or {}).get(CELL_SELECTION) or []
    if not isinstance(points, list) or not points or not {"actual", "predicted"} <= set(points[0]):
        return None
    return str(points[0]["actual"]), str(points[0]["predicted"])
