"""The layers of a Vega-Lite chart with their rows, from an Altair chart or an AppTest element."""

from __future__ import annotations

import json

import pandas as pd


def chart_layers(chart) -> list[tuple[dict, pd.DataFrame]]:
    """(layer spec, its data) for each layer of `chart` (those of concatenated charts too): an Altair chart, or what `at.get("vega_lite_chart")` holds.

    Streamlit sends each named dataset as Arrow beside the spec; Altair keeps them in the spec's `datasets`.
    """
    if hasattr(chart, "proto"):
        from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

        spec = json.loads(chart.proto.spec)
        data = {d.name: convert_arrow_bytes_to_pandas_df(d.data.data) for d in chart.proto.datasets}
    else:
        spec = chart.to_dict()
        data = {name: pd.DataFrame(rows) for name, rows in spec.get("datasets", {}).items()}
    return [(view, data[name]) for view, name in _views(spec, None)]


def _views(spec: dict, data_name: str | None) -> list[tuple[dict, str | None]]:
    """Each single view of a layered or concatenated spec, with the name of the data it inherits."""
    name = (spec.get("data") or {}).get("name", data_name)
    parts = [part for key in ("hconcat", "vconcat", "concat", "layer") for part in spec.get(key, [])]
    return [view for part in parts for view in _views(part, name)] if parts else [(spec, name)]


def layer(chart, mark: str, index: int = 0) -> tuple[dict, pd.DataFrame]:
    """The `index`-th layer whose mark type is `mark` ("rect", "line", ...)."""
    found = [(spec, rows) for spec, rows in chart_layers(chart)
             if (spec["mark"] if isinstance(spec["mark"], str) else spec["mark"]["type"]) == mark]
    return found[index]
