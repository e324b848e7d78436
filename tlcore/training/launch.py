"""Runs of several processes: launched as a `torchrun` subprocess and followed through the run folder.

The app trains one-process runs in a thread of its own (jobs.py); a run over N GPUs is
`torchrun --standalone --nproc_per_node=N -m tlcore train ... --run-id ID` in a session of its
own. Its rank 0 takes over the folder the app reserved under ID and writes status, metrics and
weights there as any run does, so the pages follow it by reading the folder. This module starts
that process, stops it on cancel (SIGINT to torchrun's agent, which passes it to the ranks; SIGKILL
to the agent and its processes after a grace period), and records how it ended when the process
could not (killed, crashed, never started): a run never stays "running" after its process is gone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tlcore.runs import ACTIVE, RunStore, _process_start, read_json
from tlcore.training.config import TrainConfig

LOG = "torchrun.log"  # torchrun's and the ranks' output, in the run folder
CANCEL_GRACE_S = 30.0  # after SIGINT: rank 0 stops between batches and records the run; then SIGKILL
_POLL_S, _SCAN_S = 0.2, 1.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # so `-m tlcore` imports this tlcore
# Never the reason a run failed: the command line this module writes first, torchrun's banner and
# warnings, rank 0's progress lines (its own message is the run's already), traceback frames.
_NOISE = re.compile(r"^(\$ |\*+$|Setting OMP_NUM_THREADS|W\d{4} |\S*warnings.warn|run \S+ (queued|failed|finished|"
                    r"cancelled)|started: |epoch \d+/\d+ |Traceback \(most recent|File \"|\^+$)")


def check(cfg: TrainConfig, processes: int) -> None:
    """Raise ValueError (one line, with the fix) if `cfg` cannot train over `processes` processes."""
    if not isinstance(processes, int) or not 1 <= processes <= 64:
        raise ValueError(f"the number of processes (GPUs) must be between 1 and 64, got {processes!r}")
    if cfg.batch_size < 2 * processes:
        raise ValueError(f"batch size {cfg.batch_size} is the global batch over {processes} GPUs: "
                         f"use at least {2 * processes} (2 per GPU)")
    if processes > 1 and (cfg.experiment_id or cfg.data_seed is not None):
        raise ValueError("runs of an experiment train in the app's process: use 1 GPU for experiments")


def planned(cfg: TrainConfig, processes: int) -> dict:
    """What a queued torchrun run's config records about its processes until rank 0 writes its own
    (`distributed.World.describe`, the same record): the run's card says "N GPUs" from the start."""
    from tlcore.training.device import pick_device  # torch: only when a run is launched
    from tlcore.training.distributed import processes_record

    backend = "nccl" if pick_device(cfg.device).type == "cuda" else "gloo"  # as init_from_env picks it
    return processes_record(processes, cfg.batch_size, backend)


def train_args(cfg: TrainConfig) -> list[str]:
    """The `python -m tlcore train` options that give `cfg` (tests check the round trip via cli)."""
    args = ["--backbone", cfg.backbone, "--data", str(cfg.data), "--strategy", cfg.strategy,
            "--epochs", str(cfg.epochs), "--batch-size", str(cfg.batch_size), "--lr", repr(cfg.lr),
            "--optimizer", cfg.optimizer, "--schedule", cfg.schedule, "--head", cfg.head,
            "--augment", cfg.augment, "--seed", str(cfg.seed), "--device", cfg.device,
            "--val-fraction", repr(cfg.val_fraction), "--unfreeze-groups", str(cfg.unfreeze_groups),
            "--lr-factor", repr(cfg.lr_factor), "--head-epochs", str(cfg.head_epochs),
            "--momentum", repr(cfg.momentum), "--weight-decay", repr(cfg.weight_decay), "--precision", cfg.precision]
    if cfg.hidden:
        args += ["--hidden", *map(str, cfg.hidden)]
    if cfg.image_size is not None:
        args += ["--image-size", str(cfg.image_size)]
    if cfg.subset is not None:
        args += ["--subset", str(cfg.subset)]
    if not cfg.feature_cache:
        args.append("--no-feature-cache")
    if cfg.sync_bn:
        args.append("--sync-bn")
    return args


def command(cfg: TrainConfig, run_id: str, runs_dir: str | Path, processes: int) -> list[str]:
    """The torchrun command line of a run over `processes` processes on this machine."""
    # `python -m torch.distributed.run` is `torchrun`, without needing the script on PATH.
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "tlcore", "train", *train_args(cfg), "--run-id", run_id, "--runs-dir", str(runs_dir)]


def start(cmd: list[str], log_path: Path) -> subprocess.Popen:
    """Start `cmd` in a session of its own, its output appended to `log_path`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (_PACKAGE_ROOT, os.environ.get("PYTHONPATH"))))}
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        # Its own session: a signal meant for the app (Ctrl-C in the app's terminal) never reaches
        # the run, and the run's processes are never mistaken for the app's.
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


def follow(proc: subprocess.Popen, stop: threading.Event, grace_s: float | None = None) -> int:
    """Wait for `proc` to end; once `stop` is set, stop it (SIGINT, then SIGKILL after `grace_s`).

    Returns its exit status. torchrun starts each rank in a session of its own, so SIGKILL goes to
    every process below the agent by pid; any of them still alive when the agent has gone is
    killed too: no process outlives the run.
    """
    grace_s = CANCEL_GRACE_S if grace_s is None else grace_s
    deadline, scanned = None, 0.0
    below: dict[int, str | None] = {}
    while proc.poll() is None:
        if time.monotonic() - scanned > _SCAN_S:  # who is below the agent, for the kill after it has gone
            below.update(_descendants(proc.pid))
            scanned = time.monotonic()
        if stop.is_set() and deadline is None:
            _signal(proc.pid, signal.SIGINT)  # the agent sends SIGINT on to the ranks: rank 0 records `cancelled`
            deadline = time.monotonic() + grace_s
        elif deadline is not None and time.monotonic() > deadline:
            below.update(_descendants(proc.pid))
            _signal(proc.pid, signal.SIGKILL)
            _kill(below)
        time.sleep(_POLL_S)
    _kill(below)  # the agent is gone: whatever it left behind goes too (not reused pids: start times match)
    return proc.returncode


def record_end(store: RunStore, run_id: str, returncode: int, stopped: bool, failure: str | None) -> str:
    """Write how a launched run ended where its process did not; return the run's final state.

    A run its rank 0 recorded (finished, failed, cancelled) keeps that record; one still queued or
    running (the process was killed, crashed, or never started) ends `cancelled` when the user
    stopped it, else `failed` with the end of torchrun's output.
    """
    folder = store.path(run_id)
    status = read_json(folder / "status.json", {}) or {}
    output = tail(folder / LOG)
    if status.get("status") not in ACTIVE:
        if status.get("status") == "failed" and output:  # rank 0 saw its side; torchrun's output has the rest
            store.write_status(run_id, {**status, "message": f"{status.get('message')}; torchrun's output ends: "
                                        f"{output}", "log": [*status.get("log", []), output]})
        return status.get("status", "failed")
    epochs = len(read_json(folder / "metrics.json", []) or [])
    if stopped and not failure:
        state, message = "cancelled", "cancelled by the user"
    else:
        why = failure or f"torchrun exited with status {returncode} before the run ended"
        state, message = "failed", f"{why}; its output ends: {output}" if output else why
    store.write_status(run_id, {**status, "status": state, "ended": time.time(), "message": message,
                                "epochs": epochs, "epochs_done": epochs, "log": [*status.get("log", []), output]})
    return state


def tail(path: Path, lines: int = 6, max_chars: int = 1500) -> str:
    """What a launched run's output says went wrong, on one line ('' when there is no output).

    torchrun ends a failure with its own report (a traceback of the launcher and a table of the
    ranks that failed), which names no cause: the last lines the ranks printed before it are kept,
    then each failed rank's exit code from the table.
    """
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 32768))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    report = min((i for i in (text.find("failed (exitcode"), text.find("ChildFailedError")) if i >= 0), default=len(text))
    report = text.rfind("\n", 0, report) + 1  # from the start of that line
    kept: list[str] = []
    for line in text[:report].splitlines():
        line = line.strip()
        if line and not _NOISE.match(line) and line not in kept:
            kept.append(line)
    codes = dict(re.findall(r"rank\s*:\s*(\d+)[^\n]*\n\s*exitcode\s*:\s*(-?\d+)", text[report:]))
    if codes:
        kept.append("torchrun: " + ", ".join(f"rank {r} exited with {c}" for r, c in sorted(codes.items())))
    return " | ".join(kept[-lines:])[-max_chars:]


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _descendants(pid: int) -> dict[int, str | None]:
    """{pid: start time} of every process below `pid` (Linux /proc; empty elsewhere)."""
    parents: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {}
    for entry in entries:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found[child] = _process_start(child)
                frontier.append(child)
    return found


def _kill(pids: dict[int, str | None]) -> None:
    for pid, started in pids.items():
        if started is not None and _process_start(pid) == started:
            _signal(pid, signal.SIGKILL)
