"""`python -m tlcore lr-find` and `predict --cam` as a user runs them; their bad arguments exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import skimage.data
from PIL import Image

from tlcore.cli import main

REPO = Path(__file__).resolve().parents[1]


def _tlcore(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tlcore", *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env=os.environ.copy())


def test_lr_find_json(tmp_path: Path) -> None:
    proc = _tlcore("lr-find", "--backbone", "simple_cnn", "--data", "digits", "--strategy", "scratch",
                   "--subset", "5", "--image-size", "32", "--num-iter", "30", "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) == {"lrs", "losses", "suggested_lr"}
    assert len(out["lrs"]) == len(out["losses"]) > 5 and out["suggested_lr"] in out["lrs"]
    assert out["lrs"] == sorted(out["lrs"])


def test_predict_cam_writes_the_overlay_and_the_peak_in_image_pixels(tmp_path: Path) -> None:
    photo = tmp_path / "chelsea.jpg"
    Image.fromarray(skimage.data.chelsea()).save(photo, quality=90)  # 451 x 300
    cams = tmp_path / "cams"
    proc = _tlcore("predict", str(photo), "--backbone", "efficientnet_lite0", "--cam", str(cams), "--json",
                   "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    [entry] = json.loads(proc.stdout)
    assert entry["cam"] == str(cams / "chelsea.cam.png") and Path(entry["cam"]).is_file()
    x, y = entry["cam_peak"]
    assert 30 <= x <= 390 and 0 <= y < 300, entry["cam_peak"]  # on the cat, not the background on the right
    assert Image.open(entry["cam"]).size[0] > 100


def test_bad_insight_arguments_exit_2_with_one_line(tmp_path: Path, capsys) -> None:
    for args, says in (
        (["report", "no-such-run", "--runs-dir", str(tmp_path)], "no-such-run"),
        (["lr-find", "--data", "/no/such/folder"], "not found"),
        (["lr-find", "--start-lr", "1", "--end-lr", "0.1"], "--start-lr"),
        (["predict", "x.png", "--model", str(tmp_path), "--cam", str(tmp_path)], "--cam needs"),
    ):
        assert main(args) == 2, args
        [line] = capsys.readouterr().err.strip().splitlines()
        assert says in line, (args, line)
