"""The row of filters above a run picker (Compare, Predict): a text search, then dataset, backbone,
strategy, status, experiment and the user's run names. Widgets only; what they mean is in
tlcore.run_filters."""

from __future__ import annotations

import streamlit as st

from tlcore import run_filters

TITLES = {"data": "Dataset", "backbone": "Backbone", "strategy": "Strategy", "status": "Status",
          "experiment": "Experiment", "name": "Your names"}


def run_filter(records, key: str, fields=tuple(TITLES)) -> run_filters.RunFilter:
    """Draw the search box and a multiselect per field that has values, in one wrapping row of
    fixed-width fields (as many a row as fit: all seven at 1400 px; columns at 1000 px cut them to
    "a" under labels broken mid-word); return the filter they make. `key` prefixes the widgets'
    keys (`{key}_text`, `{key}_data`...)."""
    values = run_filters.choices(records)
    row = st.container(horizontal=True, gap="small", vertical_alignment="bottom", key=f"{key}_filters")
    text = row.text_input("Search runs", key=f"{key}_text", placeholder="words in the name, id, data...", width=180,
                          help="runs whose label, id, your name, dataset, backbone, strategy or experiment "
                               "contain every word")
    picks = {f: row.multiselect(TITLES[f], values[f], key=f"{key}_{f}", placeholder="all", width=108)
             for f in fields if values[f]}
    return run_filters.RunFilter(text=text, **picks)
