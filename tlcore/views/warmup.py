"""Warm the app's server in the background: import what the pages need and read the run index once.

A page's first visit in a fresh server used to pay for its imports (torch, torchvision, scipy,
sklearn, pandas, altair: several seconds on two cores) and for the first read of the run index
(about 0.5 s at 2,000 runs). `start()`, called by app.py on its first run, does that work once
per process in a daemon thread, so a visitor who arrives a few seconds after the server started
finds it done; one who arrives sooner waits only for what is still loading (Python's import
locks make a page wait for a module the thread is importing, never import it twice).

Then it moves every object alive at that point (modules, the index: about half a million) into
Python's permanent generation (`gc.freeze`): Streamlit runs a full `gc.collect()` after every
script run, the Train page's poll included, and scanning those objects cost 0.7 s of held GIL each
time on this machine; they live as long as the server does, so the collector has no business there.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import threading

# What the pages import, roughly in the order a visitor meets them: Train's first (its backbone
# table comes right after them, see `warm`), then Compare's statistics and Report's.
FIRST = ("tlcore.runs", "tlcore.views.ui", "tlcore.views.charts", "tlcore.models.catalog", "tlcore.views.experiment_views",
         "tlcore.run_filters", "tlcore.analysis.lr_find", "tlcore.export.write", "tlcore.views.build_form", "tlcore.views.form")
THEN = ("tlcore.analysis.experiment_report", "scipy.stats", "statsmodels.stats.contingency_tables",
        "tlcore.views.insight_charts", "tlcore.analysis.report", "tlcore.analysis.holdout")

_started = False
_lock = threading.Lock()
log = logging.getLogger(__name__)


def start(runs_dir: str | os.PathLike | None = None) -> threading.Thread | None:
    """Start the warm-up thread once per process (later calls return None); `runs_dir`: the runs
    folder whose index to read (skipped when None or missing)."""
    global _started
    with _lock:
        if _started:
            return None
        _started = True
    thread = threading.Thread(target=warm, args=(runs_dir,), name="tlcore-warmup", daemon=True)
    thread.start()
    return thread


def warm(runs_dir: str | os.PathLike | None = None) -> None:
    """Import the pages' modules, build the backbone table, read the run index, then freeze what lives."""
    # Best effort by design: whatever fails here is done again by the page that needs it, which
    # then shows the error the way it always does; a warm-up must never break the server.
    try:
        for name in FIRST:
            importlib.import_module(name)
        from tlcore.models.catalog import backbone_table
        from tlcore.runs import RunStore

        backbone_table()  # imports torchvision (its weights enums) and fills the registry's caches
        if runs_dir is not None and os.path.isdir(runs_dir):
            RunStore(runs_dir).list()  # the process-wide run index, read from its file or the folders
        for name in THEN:
            importlib.import_module(name)
    except Exception:  # noqa: BLE001 - see above
        log.warning("tlcore warm-up stopped early (the pages do the same work when visited)", exc_info=True)
    gc.collect()  # garbage made so far is freed, not frozen
    gc.freeze()
