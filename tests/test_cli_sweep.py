"""`python -m tlcore sweep` as a user runs it: progress lines, table, verdict, the JSON shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def tlcore(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tlcore", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=os.environ.copy())


TINY = ("--data", "digits", "--subset", "5", "--image-size", "32", "--epochs", "2", "--device", "cpu")


def test_sweep_json_has_groups_comparison_and_verdict(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = tlcore("sweep", *TINY, "--strategies", "feature_extraction,finetune", "--backbones", "efficientnet_lite0",
                  "--seeds", "2", "--strategy-lrs", "finetune=1e-4", "--runs-dir", str(runs), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["experiment_id"].startswith("exp-") and out["status"] == "finished"
    names = [g["name"] for g in out["groups"]]
    assert names == ["efficientnet_lite0/feature_extraction", "efficientnet_lite0/finetune"]
    for g in out["groups"]:
        for key in ("backbone", "strategy", "n", "best_val_acc_mean", "best_val_acc_std", "best_val_accs",
                    "seconds_mean", "run_ids"):
            assert key in g, key
        assert g["n"] == 2 and len(g["run_ids"]) == 2 and len(g["best_val_accs"]) == 2
    assert {g["strategy"]: g["lr"] for g in out["groups"]} == {"feature_extraction": 1e-3, "finetune": 1e-4}
    comp = out["comparison"]
    assert {comp["a"], comp["b"]} == set(names)
    assert comp["ci_low"] <= comp["diff"] <= comp["ci_high"] and 0 < comp["p_value"] <= 1
    assert comp["verdict"] == out["verdict"] and "validation images" in comp["verdict"]
    # Progress goes to stderr with --json: one line per finished run, then the table and verdict.
    assert proc.stderr.count(" finished ") == 4 and "run 4/4" in proc.stderr
    assert "seeds:" in proc.stderr and out["verdict"] in proc.stderr
    # `runs` names each run's experiment.
    listed = json.loads(tlcore("runs", "--runs-dir", str(runs), "--json").stdout)
    assert {r["experiment_id"] for r in listed} == {out["experiment_id"]}
    text = tlcore("runs", "--runs-dir", str(runs)).stdout
    assert text.count(out["experiment_id"]) == 4


@pytest.mark.parametrize(("args", "must_say"), [
    (("--strategies", "feature_extraction,bogus"), "unknown strategy 'bogus': choose from feature_extraction"),
    (("--strategies", "finetune", "--seeds", "0"), "--seeds must be at least 1"),
    (("--strategies", "finetune", "--backbones", "resnet9"), "unknown backbone 'resnet9'"),
    (("--strategies", "finetune", "--lrs", "fast"), "--lrs takes numbers"),
])
def test_bad_grids_exit_2_with_one_line(args: tuple, must_say: str, tmp_path: Path) -> None:
    proc = tlcore("sweep", *TINY, *args, "--runs-dir", str(tmp_path), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and must_say in proc.stderr
    assert not (tmp_path / "experiments").exists()
