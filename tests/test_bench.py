"""The benchmark runs end to end in quick mode and reports every row; speed is not asserted here.

Speed targets belong to `python -m tlcore.bench` on real data (bench/RESULTS.md), not to tests:
on a shared CI machine a timing assertion would only measure the neighbours.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from torchvision import datasets

from tlcore import bench
from tlcore.data.folders import scan_folder

REPO = Path(__file__).resolve().parent.parent


def test_quick_benchmark_prints_every_row_and_the_targets(tmp_path):
    out = tmp_path / "results.md"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "tlcore.bench", "--quick", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = proc.stdout
    for key, name in bench.ROWS.items():
        line = next((line for line in report.splitlines() if line.startswith(f"| {key} | {name} |")), None)
        assert line is not None, f"row {key} missing:\n{report}"
        assert "skipped" not in line
    assert "## Targets" in report and "## Machine" in report
    assert report.count("| PASS |") + report.count("| FAIL |") == len(bench.targets({}))
    assert "generated stand-in" in report
    assert out.read_text().strip() == report.strip()


def test_standin_is_a_train_val_folder_both_loaders_read(tmp_path):
    root = bench.make_standin(tmp_path / "d", 3, 2, (40, 30))
    scan = scan_folder(root)
    assert scan.class_names == ["across", "along"]
    assert len(scan.train) == 6 and len(scan.val) == 4
    ds = datasets.ImageFolder(str(root / "val"))
    assert len(ds) == 4 and ds[0][0].size == (40, 30)


def test_targets_without_rows_are_not_applicable():
    items = bench.targets({})
    assert items and all(t.ok is None for t in items)
    assert "n/a" in bench.render_targets(items)


def test_table_marks_skipped_rows_and_ratios_against_the_right_baseline():
    rows = {
        1: bench.Row(1, seconds=100.0, images=1000, best_val_acc=0.9, epochs=10),
        2: bench.Row(2, seconds=20.0, images=1000, best_val_acc=0.91, epochs=10),
        5: bench.Row(5, seconds=30.0, images=300, best_val_acc=0.8, epochs=3),
        6: bench.Row(6, seconds=15.0, images=300, best_val_acc=0.785, epochs=3),
    }
    table = bench.render_table(rows)
    assert "| 3 | tlcore feature_extraction, warm cache | skipped |" in table
    line2 = next(line for line in table.splitlines() if line.startswith("| 2 |"))
    line6 = next(line for line in table.splitlines() if line.startswith("| 6 |"))
    assert "| 0.200 |" in line2 and "| 0.500 |" in line6
    verdicts = {t.name: t.ok for t in bench.targets(rows)}
    assert verdicts["[6] tlcore finetune s/epoch <= 0.6x baseline's (batch 4)"] is True  # 0.5x
    assert verdicts["[6] vs [5] val accuracy within 1 point"] is False  # 1.5 points lower
    rows[6] = bench.Row(6, seconds=18.5, images=300, best_val_acc=0.795, epochs=3)
    verdicts = {t.name: t.ok for t in bench.targets(rows)}
    assert verdicts["[6] tlcore finetune s/epoch <= 0.6x baseline's (batch 4)"] is False  # 0.62x
    assert verdicts["[6] vs [5] val accuracy within 1 point"] is True
    assert verdicts["[2] vs [1] val accuracy within 1.5 points"] is True


@pytest.mark.parametrize("argv", [["--rows", "9"], ["--rows", "one"]])
def test_bad_rows_argument_exits_2(argv, capsys):
    assert bench.main(argv) == 2
    assert "--rows" in capsys.readouterr().err


def test_gpu_benchmark_reports_every_precision_mode(tmp_path):
    """The GPU script is run on lent GPU machines with minutes to spare: it must not fail there.

    `--quick` runs the same code on the CPU (tiny sizes); the engine part starts processes and is
    left to the GPU run itself.
    """
    from tlcore.bench import gpu

    out = tmp_path / "RESULTS-gpu.md"
    assert gpu.main(["--quick", "--skip-engine", "--backbones", "simple_cnn", "--out", str(out)]) == 0
    report = out.read_text()
    for label, *_ in gpu.MODES:
        assert f"| simple_cnn | {label} |" in report
    assert "| simple_cnn | bf16 autocast + channels_last |" in report.split("## Feature extraction")[1]


def test_kernel_benchmark_prints_each_setting_per_pass(capsys):
    """`python -m tlcore.bench.kernels` on a tiny input: one row per pass, one cell per arithmetic."""
    from tlcore.bench import kernels

    assert kernels.main(["--backbones", "simple_cnn", "--image-size", "32", "--batch-size", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| backbone |"))
    assert all(label in header for label in ("fp32 contiguous", "fp32 channels_last", "bf16 contiguous",
                                             "bf16 channels_last"))
    rows = [line for line in out.splitlines() if line.startswith("| simple_cnn |")]
    assert [r.split("|")[2].strip() for r in rows] == ["forward", "train"]
    assert all(r.count("x)") == 4 and "(1.00x)" in r for r in rows)
