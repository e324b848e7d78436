"""Runs the app launches over several processes (torchrun, gloo on CPU, 2 processes) and follows.

JobManager.submit(..., processes=2) starts `torchrun --standalone --nproc_per_node=2 -m tlcore
train ... --run-id ID`; these tests check that such a run is followed to the end through its
folder, that cancel stops every process and records `cancelled`, and that a process that dies
or exits non-zero ends the run `failed` with the end of its output, never stuck "running".
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from torch import nn

from tlcore import cli
from tlcore.models import backbones
from tlcore.runs import RunStore
from tlcore.training import distributed, launch
from tlcore.training.config import TrainConfig
from tlcore.training.jobs import JobManager
from tlcore.training.strategies import apply_train_mode, make_strategy
from tlcore.views import ui

TINY = dict(backbone="simple_cnn", strategy="scratch", data="digits", subset=5, image_size=32, device="cpu",
            batch_size=8, seed=3)


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (one killed but not yet reaped by its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _processes_of(run_id: str) -> list[int]:
    """Pids of live processes whose command line names the run (torchrun's agent and its ranks)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if run_id in cmdline and _alive(int(entry)):
                pids.append(int(entry))
    return pids


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TLCORE_THREADS", "1")
    m = JobManager(tmp_path / "runs")
    yield m
    m.close(timeout=60)


@pytest.mark.slow
def test_a_launched_run_finishes_in_one_folder_that_the_store_lists(manager: JobManager) -> None:
    run_id = manager.submit(TrainConfig(**TINY, epochs=2), processes=2)
    assert manager.snapshot(run_id)["status"] in ("queued", "running")
    # Queued, before torchrun starts: the config already says how many processes (the card shows it).
    assert manager.store.load(run_id).config["distributed"]["world_size"] == 2
    assert run_id in manager.active()
    assert manager.wait(run_id, timeout=300), "the launched run did not end"
    [record] = manager.store.list()
    assert record.run_id == run_id and record.state == "finished", record.status
    assert len(record.metrics) == 2
    assert record.config["distributed"]["world_size"] == 2  # written by torchrun's rank 0
    assert record.config["distributed"]["backend"] == "gloo" and "2 processes (torchrun)" in ui.run_details(record)
    assert (manager.store.path(run_id) / "model.safetensors").is_file()
    assert "--nproc_per_node=2" in (manager.store.path(run_id) / launch.LOG).read_text()
    assert manager.snapshot(run_id)["status"] == "finished" and not manager.active()


@pytest.mark.slow
def test_cancel_of_a_launched_run_ends_it_cancelled_with_its_epochs_and_no_process_left(
        manager: JobManager) -> None:
    run_id = manager.submit(TrainConfig(**TINY, epochs=200), processes=2)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not manager.snapshot(run_id).get("metrics"):
        assert not manager.wait(run_id, timeout=0.5), manager.snapshot(run_id)
    assert manager.snapshot(run_id)["status"] == "running"
    assert len(_processes_of(run_id)) >= 3  # the agent and two ranks
    assert manager.cancel(run_id)
    assert manager.wait(run_id, timeout=120), "cancel did not stop the launched run"
    record = manager.store.load(run_id)
    assert record.state == "cancelled", record.status
    assert 1 <= len(record.metrics) < 200 and record.status["epochs"] == len(record.metrics)
    assert _processes_of(run_id) == []


@pytest.mark.slow
def test_a_rank_that_dies_fails_the_launched_run_with_its_output(manager: JobManager,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLCORE_TEST_EXIT_AFTER", "1:1")  # rank 1 exits with status 3 after epoch 1
    run_id = manager.submit(TrainConfig(**TINY, epochs=3), processes=2)
    assert manager.wait(run_id, timeout=300), "a dead rank left the launched run hanging"
    record = manager.store.load(run_id)
    assert record.state == "failed", record.status
    assert "torchrun's output ends:" in record.status["message"], record.status["message"]
    assert "rank 1 exited with 3" in record.status["message"], record.status["message"]
    assert len(record.metrics) == 1
    assert _processes_of(run_id) == []


def test_a_process_that_exits_at_once_fails_the_reserved_run_with_its_stderr(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.reserve("r1", TrainConfig().to_dict())
    code = "import sys; print('tlcore: error: no such folder /nope', file=sys.stderr); sys.exit(2)"
    proc = launch.start([sys.executable, "-c", code], store.path("r1") / launch.LOG)
    assert launch.follow(proc, threading.Event()) == 2
    assert launch.record_end(store, "r1", 2, stopped=False, failure=None) == "failed"
    record = store.load("r1")
    assert record.state == "failed"
    assert "exited with status 2" in record.status["message"] and "no such folder /nope" in record.status["message"]


def test_cancel_kills_what_ignores_sigint_after_the_grace_period(tmp_path: Path) -> None:
    """An agent that ignores SIGINT and a child in a session of its own (as torchrun's ranks) both go."""
    code = textwrap.dedent("""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, "
                                  "signal.SIG_IGN); time.sleep(300)"], start_new_session=True)
        print("CHILD" + "PID", child.pid, flush=True)  # the echoed command line never has CHILDPID
        time.sleep(300)
    """)
    proc = launch.start([sys.executable, "-c", code], tmp_path / "log")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (said := [line for line in (tmp_path / "log").read_text().splitlines()
                                                         if line.startswith("CHILDPID ")]):
        time.sleep(0.1)
    child = int(said[0].split()[1])
    stop = threading.Event()
    stop.set()
    t0 = time.monotonic()
    assert launch.follow(proc, stop, grace_s=1.0) == -signal.SIGKILL
    assert time.monotonic() - t0 < 10
    time.sleep(0.2)
    assert not _alive(child)


def test_train_args_give_back_the_config_through_the_cli() -> None:
    cfg = TrainConfig(backbone="resnet18", data="/some/folder", strategy="gradual", epochs=7, batch_size=24,
                      lr=3e-4, optimizer="sgd", momentum=0.8, weight_decay=1e-4, schedule="cosine", head="mlp",
                      hidden=(64, 32), augment="flip-crop", image_size=96, seed=11, device="cpu", subset=9,
                      val_fraction=0.3, unfreeze_groups=3, lr_factor=0.25, head_epochs=2, feature_cache=False,
                      precision="fp32", sync_bn=True)
    # Every field but these differs from its default above: a new field must reach launched runs too.
    not_launched = {"data_seed", "experiment_id", "cell", "distributed"}  # experiments; torchrun's rank 0 writes it
    assert {f.name for f in fields(TrainConfig) if getattr(cfg, f.name) == getattr(TrainConfig(), f.name)} == not_launched
    args = cli.build_parser().parse_args(["train", *launch.train_args(cfg)])
    assert cli._config_from_args(args) == cfg
    default = TrainConfig()
    assert cli._config_from_args(cli.build_parser().parse_args(["train", *launch.train_args(default)])) == default


def test_submit_over_several_processes_refuses_a_batch_too_small_and_a_taken_id(manager: JobManager) -> None:
    with pytest.raises(ValueError, match="use at least 8"):
        manager.submit(TrainConfig(**{**TINY, "batch_size": 6}), processes=4)
    experiment_run = TrainConfig(**TINY, experiment_id="e1", data_seed=0)
    with pytest.raises(ValueError, match="use 1 GPU for experiments"):
        manager.submit(experiment_run, processes=2)
    launch.check(experiment_run, 1)  # an experiment's runs train in the app's process, as before
    manager.store.create("taken", TrainConfig().to_dict())
    with pytest.raises(ValueError, match="already exists"):
        manager.submit(TrainConfig(**TINY), run_id="taken", processes=2)
    assert manager.active() == []


def test_cli_run_id_is_validated_and_never_overwrites_a_run(tmp_path: Path, capsys) -> None:
    assert cli.main(["train", "--run-id", "../escape", "--runs-dir", str(tmp_path)]) == 2
    assert "invalid run id" in capsys.readouterr().err
    RunStore(tmp_path).create("mine", {"backbone": "x"})
    assert cli.main(["train", "--run-id", "mine", "--runs-dir", str(tmp_path)]) == 2
    assert "run mine already exists" in capsys.readouterr().err
    assert RunStore(tmp_path).load("mine").config == {"backbone": "x"}


def test_sync_bn_is_refused_on_cpu_and_in_one_process(tmp_path: Path, capsys) -> None:
    assert cli.main(["train", "--sync-bn", "--device", "cpu", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--sync-bn needs several processes on CUDA GPUs" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="leave out --sync-bn"):
        distributed.check_sync_bn(True, "cpu", world_size=2)
    distributed.check_sync_bn(False, "cpu", world_size=1)  # not asked for: nothing to refuse


def test_sync_batchnorm_converts_every_bn_and_frozen_ones_stay_frozen_in_eval() -> None:
    model = backbones.build_model("simple_cnn", 3, pretrained=False, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model, count = distributed.sync_batchnorm(model)
    assert count == sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules()) > 0
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
    assert model.state_dict().keys() == before.keys()  # saved weights load into the plain model
    groups = backbones.param_groups(model, "simple_cnn")  # taken after the conversion, as train() does
    make_strategy("partial", unfreeze_groups=1).optimizer_groups(groups, 1e-3)
    apply_train_mode(model, groups)
    bns = [m for m in model.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert {m.weight.requires_grad for m in bns} == {True, False}  # block3 trains, blocks 1-2 are frozen
    assert all(m.training == m.weight.requires_grad for m in bns)  # frozen ones in eval: they never sync
    model.eval()
    with torch.no_grad():  # in eval mode SyncBatchNorm never communicates: CPU is fine
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_tail_keeps_what_the_ranks_said_and_their_exit_codes_not_torchruns_report(tmp_path: Path) -> None:
    # torchrun's output when both ranks failed to start (trimmed: its traceback has more frames).
    (tmp_path / "log").write_text(textwrap.dedent("""\
        $ python -m torch.distributed.run --standalone --nproc_per_node=2 -m tlcore train
        *****************************************
        Setting OMP_NUM_THREADS environment variable for each process to be 1 in default
        *****************************************
        /usr/bin/python: No module named tlcore
        /usr/bin/python: No module named tlcore
        E1127 10:44:28.190000 29544 api.py:1002] failed (exitcode: 1) local_rank: 0 (pid: 29756) of binary: python
        Traceback (most recent call last):
          File "torch/distributed/launcher/api.py", line 386, in launch_agent
            raise ChildFailedError(
        torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
        ============================================================
        tlcore FAILED
        ------------------------------------------------------------
        Failures:
        [1]:
          time      : 2026-11-27_10:44:28
          rank      : 1 (local_rank: 1)
          exitcode  : -9 (pid: 29759)
          traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
        ------------------------------------------------------------
        Root Cause (first observed failure):
        [0]:
          rank      : 0 (local_rank: 0)
          exitcode  : 1 (pid: 29756)
        ============================================================
        """))
    assert launch.tail(tmp_path / "log") == ("/usr/bin/python: No module named tlcore | "
                                              "torchrun: rank 0 exited with 1, rank 1 exited with -9")
    assert launch.tail(tmp_path / "missing") == ""


def test_a_queued_launch_records_its_processes_as_rank_0_will() -> None:
    cfg = TrainConfig(**{**TINY, "batch_size": 9, "device": "cpu"})
    assert launch.planned(cfg, 2) == {"world_size": 2, "global_batch_size": 9, "batch_size_per_process": 5,
                                      "backend": "gloo"}
    assert ui.processes_text({"world_size": 4, "backend": "nccl"}) == "4 GPUs (torchrun)"
    assert ui.processes_text({"world_size": 2, "backend": "gloo"}) == "2 processes (torchrun)"
    assert ui.processes_text(None) is None and ui.processes_text({"world_size": 1}) is None
