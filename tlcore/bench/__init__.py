"""The speed benchmark: `python -m tlcore.bench` (see bench/README.md).

In one process, on the same data, it times the PyTorch transfer-learning tutorial loop as
users write it against tlcore's own path (through the real `JobManager`), a floor (one
inference pass over the data), warm prediction and the peak memory of a fine-tuning run, then
prints a markdown table and each target with PASS/FAIL. The machine it was made for is a
shared 2-core CPU, so every row also says how busy other processes kept the machine.
"""

from tlcore.bench.cli import main
from tlcore.bench.common import GB, ROWS
from tlcore.bench.inputs import find_hymenoptera, make_standin
from tlcore.bench.measure import Row
from tlcore.bench.report import Target, render_report, render_table, render_targets, targets

__all__ = ["GB", "ROWS", "Row", "Target", "find_hymenoptera", "main", "make_standin", "render_report",
           "render_table", "render_targets", "targets"]
