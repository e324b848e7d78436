"""The command line, run as a user would: `python -m tlcore ...` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tlcore.cli import main
from tlcore.data.sources import BUILTIN
from tlcore.models.backbones import list_backbones
from tlcore.training.strategies import STRATEGIES

REPO = Path(__file__).resolve().parents[1]


def tlcore(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tlcore", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=os.environ.copy())


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    """(runs folder, parsed last stdout line) of a small `train --json` on digits."""
    runs = tmp_path_factory.mktemp("cli") / "runs"
    proc = tlcore("train", "--data", "digits", "--backbone", "efficientnet_lite0", "--subset", "5",
                  "--image-size", "64", "--epochs", "2", "--device", "cpu", "--runs-dir", str(runs), "--json")
    assert proc.returncode == 0, proc.stderr
    return runs, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_backbones_json_lists_all_with_offline_flags() -> None:
    proc = tlcore("backbones", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert list(rows) == list_backbones() and len(rows) == 12
    assert rows["efficientnet_lite0"]["available_offline"] is True
    assert rows["simple_cnn"]["available_offline"] is True
    assert rows["resnet18"]["available_offline"] is False  # TORCH_HOME is empty
    assert all(r["params"] > 0 and r["input_size"] >= 64 for r in rows.values())


@pytest.mark.slow
def test_train_json_result(trained) -> None:
    _, result = trained
    keys = {"run_id", "status", "best_val_acc", "final_val_acc", "epochs", "seconds", "trainable_params",
            "total_params"}
    assert keys <= set(result)
    assert result["status"] == "finished" and result["epochs"] == 2
    assert 0 <= result["final_val_acc"] <= result["best_val_acc"] <= 1
    assert 0 < result["trainable_params"] < result["total_params"]  # feature extraction: head only


@pytest.mark.slow
def test_runs_json_lists_the_run(trained) -> None:
    runs, result = trained
    proc = tlcore("runs", "--runs-dir", str(runs), "--json")
    assert proc.returncode == 0, proc.stderr
    [row] = json.loads(proc.stdout)
    assert row["run_id"] == result["run_id"] and row["status"] == "finished" and row["epochs"] == 2
    assert row["backbone"] == "efficientnet_lite0" and row["data"] == "digits"


@pytest.mark.slow
def test_predict_json_with_a_run(trained, tmp_path: Path, png_bytes) -> None:
    runs, result = trained
    image = tmp_path / "coffee.png"
    image.write_bytes(png_bytes("coffee"))
    # Any unique prefix of the id will do: here its date and time, as `runs` lists it.
    proc = tlcore("predict", str(image), "--run", result["run_id"][:15], "--runs-dir", str(runs), "--topk", "3",
                  "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    [entry] = json.loads(proc.stdout)
    assert entry["image"] == str(image)
    assert len(entry["predictions"]) == 3
    assert {p["label"] for p in entry["predictions"]} <= {str(i) for i in range(10)}
    assert all(set(p) == {"label", "prob"} and 0 <= p["prob"] <= 1 for p in entry["predictions"])


@pytest.mark.slow
def test_unknown_backbone_exits_2_with_one_line() -> None:
    proc = tlcore("train", "--backbone", "resnet7", "--epochs", "1")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "resnet7" in line and "efficientnet_lite0" in line and "resnet18" in line


def _run_main(args: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "must_name"),
    [
        (["train", "--backbone", "resnet7"], list_backbones()),
        (["train", "--strategy", "freeze_half"], list(STRATEGIES)),
        (["train", "--data", "imagenet"], list(BUILTIN)),
        (["train", "--data", "/no/such/folder"], list(BUILTIN)),
        (["train", "--optimizer", "rmsprop"], ["sgd", "adam"]),
        (["train", "--image-size", "8"], ["32", "1024"]),
        (["predict", "x.png", "--run", "../etc"], ["invalid run id"]),
        (["predict", "x.png", "--run", "no-such-run"], ["no-such-run"]),
        (["predict", "x.png", "--backbone", "simple_cnn"], ["no pretrained ImageNet head"]),
    ],
    ids=["backbone", "strategy", "dataset", "missing_path", "optimizer", "image_size", "run_path",
         "missing_run", "no_imagenet_head"],
)
def test_bad_arguments_exit_2_with_one_line_saying_what_is_valid(args, must_name, capsys, tmp_path) -> None:
    code, err = _run_main([*args, "--runs-dir", str(tmp_path)], capsys)
    assert code == 2
    [line] = err.strip().splitlines()
    for name in must_name:
        assert name in line


def test_a_run_id_prefix_picks_the_one_run_or_lists_the_matches(tmp_path: Path, capsys) -> None:
    from tlcore.runs import RunStore

    store = RunStore(tmp_path / "runs")
    ids = ["20261127-054706-resnet18-finetune-aaaaaa", "20261127-054706-resnet18-scratch-bbbbbb",
           "20261127-060000-simple_cnn-scratch-cccccc"]
    for run_id in ids:
        store.create(run_id, {"backbone": "simple_cnn", "strategy": "scratch", "data": "digits"})
    runs = ["--runs-dir", str(tmp_path / "runs")]
    # Unique: resolved to the full id (this run has no weights, which the message then says).
    code, err = _run_main(["predict", "x.png", "--run", "20261127-06", *runs], capsys)
    assert code == 2 and f"run {ids[2]} has no" in err
    # Ambiguous: exit 2 naming every match.
    code, err = _run_main(["predict", "x.png", "--run", "20261127-054706", *runs], capsys)
    assert code == 2 and "matches 2 runs" in err and ids[0] in err and ids[1] in err and ids[2] not in err
    code, err = _run_main(["predict", "x.png", "--run", "2025", *runs], capsys)
    assert code == 2 and "no run id starts with '2025'" in err and len(err.strip().splitlines()) == 1


def test_train_learning_rate_defaults_per_strategy_and_optimizer() -> None:
    from tlcore.cli import _config_from_args, build_parser
    from tlcore.training.config import default_lr

    def lr(*args: str) -> float:
        return _config_from_args(build_parser().parse_args(["train", *args])).lr

    assert lr() == default_lr("feature_extraction") == 1e-3
    assert lr("--strategy", "finetune") == default_lr("finetune") == 1e-4
    assert lr("--strategy", "finetune", "--optimizer", "sgd") == pytest.approx(1e-3)
    assert lr("--strategy", "finetune", "--lr", "0.05") == 0.05


def test_runs_lists_uploads_by_their_file_name_and_user_names(tmp_path: Path, capsys) -> None:
    from tlcore.data.uploads import save_upload
    from tlcore.runs import RunStore

    stored = save_upload(b"PK\x05\x06" + bytes(18), "cats and dogs.zip", tmp_path / "uploads")
    store = RunStore(tmp_path / "runs")
    store.create("20261127-054706-a", {"backbone": "simple_cnn", "strategy": "scratch", "data": str(stored)})
    store.set_name("20261127-054706-a", "first try")
    assert main(["runs", "--runs-dir", str(tmp_path / "runs")]) == 0
    line = capsys.readouterr().out.strip()
    assert "cats and dogs.zip" in line and "'first try'" in line and stored.stem not in line
