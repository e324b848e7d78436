"""The command line as a person uses it: readable output, predict from a backbone, bad images,
Ctrl-C, and every `train` flag reaching the run's TrainConfig."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tlcore import cli
from tlcore.runs import RunStore
from tlcore.training import jobs as jobs_module
from tlcore.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
CATS = ("tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat")
TINY = ["--backbone", "simple_cnn", "--strategy", "scratch", "--data", "digits", "--image-size", "32",
        "--device", "cpu"]


def tlcore(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tlcore", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=os.environ.copy())


# ---- every train flag reaches the TrainConfig (in process) ---------------------------------------

# dest -> (arguments, TrainConfig field, the value it must get). Every value differs from the default.
TRAIN_FLAGS = {
    "backbone": (["--backbone", "resnet18"], "backbone", "resnet18"),
    "strategy": (["--strategy", "gradual"], "strategy", "gradual"),
    "data": (None, "data", None),  # a real folder, filled in by the test
    "epochs": (["--epochs", "7"], "epochs", 7),
    "batch_size": (["--batch-size", "12"], "batch_size", 12),
    "lr": (["--lr", "0.05"], "lr", 0.05),
    "optimizer": (["--optimizer", "sgd"], "optimizer", "sgd"),
    "momentum": (["--momentum", "0.8"], "momentum", 0.8),
    "weight_decay": (["--weight-decay", "0.001"], "weight_decay", 0.001),
    "schedule": (["--schedule", "cosine"], "schedule", "cosine"),
    "head": (["--head", "mlp"], "head", "mlp"),
    "hidden": (["--hidden", "64", "32"], "hidden", (64, 32)),
    "augment": (["--augment", "flip-crop"], "augment", "flip-crop"),
    "image_size": (["--image-size", "96"], "image_size", 96),
    "seed": (["--seed", "11"], "seed", 11),
    "device": (["--device", "cpu"], "device", "cpu"),
    "subset": (["--subset", "3"], "subset", 3),
    "val_fraction": (["--val-fraction", "0.3"], "val_fraction", 0.3),
    "unfreeze_groups": (["--unfreeze-groups", "3"], "unfreeze_groups", 3),
    "lr_factor": (["--lr-factor", "0.25"], "lr_factor", 0.25),
    "head_epochs": (["--head-epochs", "2"], "head_epochs", 2),
    "no_feature_cache": (["--no-feature-cache"], "feature_cache", False),
    "precision": (["--precision", "fp32"], "precision", "fp32"),
}
NOT_CONFIG = {"help", "runs_dir", "json", "new_run_id"}  # where the run goes, its name, how it is printed
# --sync-bn is refused on CPU: tests/test_launch.py checks the refusal and that it reaches the config.
NOT_CONFIG |= {"sync_bn"}


def _train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


class _FakeManager:
    """Takes the submitted config and reports the run finished at once."""

    def __init__(self, runs_dir):
        self.runs_dir = runs_dir
        self.configs: list[TrainConfig] = []

    def submit(self, config: TrainConfig, listener=None, run_id=None) -> str:
        self.configs.append(config)
        return "20250101-000000-fake"

    def wait(self, run_id, timeout=None) -> bool:
        return True

    def snapshot(self, run_id) -> dict:
        return {"status": "finished", "best_val_acc": 0.5, "best_epoch": 1, "seconds": 0.1}


def test_every_train_flag_reaches_the_submitted_config(monkeypatch, tmp_path: Path, image_folder: Path,
                                                       capsys) -> None:
    dests = {a.dest for a in _train_parser()._actions} - NOT_CONFIG
    assert dests == set(TRAIN_FLAGS), f"train flags without a check here: {dests ^ set(TRAIN_FLAGS)}"

    made: list[_FakeManager] = []

    def fake_get_manager(runs_dir, *args, **kwargs):
        made.append(_FakeManager(runs_dir))
        return made[-1]

    monkeypatch.setattr(jobs_module, "get_manager", fake_get_manager)
    flags = {**TRAIN_FLAGS, "data": (["--data", str(image_folder)], "data", str(image_folder))}
    argv = ["train", *[token for args, _, _ in flags.values() for token in args], "--runs-dir", str(tmp_path / "r")]
    assert cli.main(argv) == 0, capsys.readouterr().err
    [manager] = made
    assert Path(manager.runs_dir) == tmp_path / "r"
    [config] = manager.configs
    default = TrainConfig()
    for dest, (_, field, value) in flags.items():
        assert getattr(config, field) == value, f"--{dest.replace('_', '-')} did not reach TrainConfig.{field}"
        assert getattr(default, field) != value, f"the check of --{dest} uses the default value"


def test_bf16_on_a_cpu_without_it_is_a_usage_error(monkeypatch, capsys, tmp_path: Path) -> None:
    from tlcore.training import device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    code = cli.main(["train", *TINY, "--precision", "bf16", "--runs-dir", str(tmp_path / "r")])
    assert code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "this CPU has no native bf16" in line and "use --precision auto or fp32" in line
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())  # no run was queued


def test_topk_0_is_a_usage_error(capsys, tmp_path: Path) -> None:
    code = cli.main(["predict", str(tmp_path / "x.png"), "--backbone", "efficientnet_lite0", "--topk", "0"])
    assert code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "--topk must be at least 1, got 0" in line


# ---- subprocesses: what a person sees --------------------------------------------------------------


def test_train_runs_and_predict_print_readable_lines(tmp_path: Path, png_bytes, capsys) -> None:
    runs = tmp_path / "runs"
    assert cli.main(["train", *TINY, "--epochs", "2", "--subset", "5", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out  # the worker thread prints the progress lines
    lines = out.splitlines()
    run_id = re.fullmatch(r"run (\S+) queued", lines[0]).group(1)
    assert re.fullmatch(r"started: 10 classes, \d+ train / \d+ val images on cpu \(full forward\)",
                        next(x for x in lines if x.startswith("started"))), lines
    epochs = [x for x in lines if x.startswith("epoch ")]
    assert [x.split()[1] for x in epochs] == ["1/2", "2/2"]
    assert all(re.fullmatch(r"epoch \d/2  train loss [\d.]+ acc [\d.]+  val loss [\d.]+ acc [\d.]+  lr \S+  [\d.]+s", x)
               for x in epochs), epochs
    assert re.fullmatch(rf"run {run_id} finished: best val acc [\d.]+ at epoch [12] in [\d.]+s", lines[-1])
    assert "{" not in out  # no JSON without --json

    assert cli.main(["runs", "--runs-dir", str(runs)]) == 0
    [row] = capsys.readouterr().out.splitlines()
    assert row.startswith(run_id) and " finished " in row and "epochs   2" in row and "digits" in row

    image = tmp_path / "coffee.png"
    image.write_bytes(png_bytes("coffee"))
    assert cli.main(["predict", str(image), "--run", run_id, "--runs-dir", str(runs), "--topk", "3",
                     "--device", "cpu"]) == 0
    first, *rows = capsys.readouterr().out.splitlines()
    assert first == str(image) and len(rows) == 3
    probs = [float(re.fullmatch(r" +([01]\.\d{3})  ([0-9])", r).group(1)) for r in rows]
    assert probs == sorted(probs, reverse=True)


@pytest.mark.slow
def test_predict_with_a_backbone_and_an_unreadable_image_exits_1(tmp_path: Path, png_bytes) -> None:
    cat, bad = tmp_path / "chelsea.png", tmp_path / "notes.png"
    cat.write_bytes(png_bytes("chelsea"))
    bad.write_bytes(b"these are notes, not a picture")
    proc = tlcore("predict", str(cat), str(bad), "--backbone", "efficientnet_lite0", "--device", "cpu")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == str(cat) and len(lines) == 1 + 5 + 2  # cat + top-5, the bad file + its error
    labels = [re.fullmatch(r" +[01]\.\d{3}  (.+)", x).group(1) for x in lines[1:6]]
    assert labels[0] in CATS, labels
    assert lines[6] == str(bad) and lines[7].startswith("  error: ") and "notes.png" in lines[7]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_ctrl_c_cancels_the_run_and_exits_1(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "tlcore", "train", *TINY, "--epochs", "300", "--subset", "20",
                             "--runs-dir", str(runs)],
                            cwd=REPO, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stdout:  # blocks until the child prints; it flushes each line
            seen.append(line)
            if line.startswith("epoch 1/300"):
                break
        else:
            pytest.fail(f"no epoch line: {''.join(seen)}{proc.stderr.read()}")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 1, err
    run_id = re.fullmatch(r"run (\S+) queued\n", seen[0]).group(1)
    assert f"run {run_id} cancelled: cancelled by the user" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    record = RunStore(runs).load(run_id)
    assert record.state == "cancelled" and 1 <= len(record.metrics) < 300
    assert (runs / run_id / "model.safetensors").is_file()
