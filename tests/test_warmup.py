"""The server's background warm-up (warmup.py): once per process, it imports the pages' modules,
reads the run index and freezes what lives, so a full garbage collection no longer scans them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fake_runs import fake_run

from tlcore.runs import RunStore

REPO = Path(__file__).resolve().parent.parent

CHECK = """
import gc, sys, time
from tlcore.views import warmup
from tlcore.run_index import index_for
from tlcore.runs import RunStore
root = sys.argv[1]
thread = warmup.start(root)
assert warmup.start(root) is None, "a second start must not warm again"
thread.join(300)
assert not thread.is_alive()
missing = [m for m in (*warmup.FIRST, *warmup.THEN, "torchvision", "altair") if m not in sys.modules]
assert not missing, missing
assert gc.get_freeze_count() > 100_000, gc.get_freeze_count()
index = index_for(root, RunStore(root).load)
assert len(index._entries) == 3, index._entries  # read by the warm-up, before any page asked
warmup.warm(root + "/no such folder")  # a missing runs folder: nothing to read, no error
t = time.perf_counter(); gc.collect(); print(f"collect {time.perf_counter() - t:.3f}")
"""


def test_warm_up_imports_reads_the_index_and_freezes(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    for i in range(3):
        fake_run(store, i)
    done = subprocess.run([sys.executable, "-c", CHECK, str(store.root)], cwd=REPO, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "TLCORE_THREADS": "1", "TLCORE_OFFLINE": "1",
                               "HOME": str(tmp_path)}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.split()[-1]) < 0.1  # nothing left to scan: it was 0.7 s before freezing



def test_the_train_page_imports_no_statistics_library() -> None:
    """scipy.stats and statsmodels (0.8-1 s) load when a verdict is computed, not with the Train page's modules."""
    code = ("import sys; import tlcore.views.experiment_views, tlcore.views.ui, tlcore.experiments; "
            "print(sorted(m for m in ('scipy.stats', 'statsmodels') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "TLCORE_THREADS": "1", "TLCORE_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-2] == "[]"
