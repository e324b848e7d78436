"""The row of filters above a run picker (Compare, Predict): a text search, then dataset, backbone,
strategy, status, experiment and the user's run names. Widgets only; what they mean is in
tlcore.run_filters."""

from __future__ import annotations

import streamlit as st

from tlcore import run_filters

TITLES = {"data": "Dataset", "backbone": "Backbone", "strategy": "Strategy", "status": "Status",
          "experiment": "Experiment", "name": "Your names"}


def run_filter(records, key: str, fields=tuple(TITLES), per_row: int = 6) -> run_filters.RunFilter:
    """Draw the search box and a multiselect per field that has values, `per_row` to a row (the
    search beside them when they fit in one row); return the filter they make. `key` prefixes
    the widgets' keys (`{key}_text`, `{key}_data`...)."""
    values = run_filters.choices(records)
    shown = [f for f in fields if values[f]]
    one_row = len(shown) <= per_row
    columns = st.columns([2] + [1] * len(shown), vertical_alignment="bottom") if one_row else [st]
    text = columns[0].text_input("Search runs", key=f"{key}_text", placeholder="words in the name, id, data...",
                                 help="runs whose label, id, your name, dataset, backbone, strategy or experiment "
                                      "contain every word")
    slots = columns[1:] if one_row else [c for i in range(0, len(shown), per_row) for c in st.columns(per_row)]
    picks = {f: col.multiselect(TITLES[f], values[f], key=f"{key}_{f}", placeholder="all")
             for col, f in zip(slots, shown, strict=False)}
    return run_filters.RunFilter(text=text, **picks)
