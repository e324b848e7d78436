"""The page benchmark's summary (tlcore/bench/runs_scale.py): medians of the repeated visits, the server's first apart."""

from __future__ import annotations

from tlcore.bench import runs_scale


def test_summary_takes_medians_and_keeps_the_first_visit_apart() -> None:
    seconds = {"Train (1)": 3.5, "Train (2)": 2.0, "Train (3)": 2.4, "Train (4)": 9.0, "Train (12)": 2.2,
               "Train (returning 1)": 1.5, "Train (returning 2)": 1.7, "Home (1)": 1.0, "Home (2)": None,
               "Home (returning)": 0.8}
    table = runs_scale.summary(seconds)
    assert table["Train"] == (3.5, 2.3, 1.6)
    assert table["Home"] == (1.0, None, 0.8)  # a visit that timed out: no median to give
    assert table["Report"] == (None, None, None)  # not measured
