"""`python -m tlcore.bench.gpu`: what a CUDA GPU gives tlcore, in one short script.

Three parts, each a table of bench/RESULTS-gpu.md:
1. Training steps (Adam, every parameter trains) per backbone, in fp32 (contiguous and
   channels_last) against bf16/fp16 autocast + channels_last: images/s from synchronised
   timers around many steps, after warm-up steps (cuDNN picks its kernels then).
2. Feature extraction: an eval-mode forward under `inference_mode`, fp32 against bf16.
3. The real engine end to end, each a `python -m tlcore ...` child process on generated JPEGs:
   finetune, feature_extraction, gradual and scratch runs, a 1-GPU `torchrun` run, then
   predict (with Grad-CAM) and export of the finetuned run. Wall time, status and accuracy.

It is meant for a lent GPU machine with a few minutes of time: `--quick` runs it on any device
with tiny sizes, to check the script itself before spending GPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tlcore.bench.inputs import make_standin
from tlcore.models.backbones import build_model

# (label, autocast dtype or None, channels_last, cudnn.benchmark). tlcore's CUDA default is the
# third row; the last says whether letting cuDNN time its kernels for a fixed size would pay.
MODES = (
    ("fp32", None, False, False),
    ("fp32 + channels_last", None, True, False),
    ("bf16 autocast + channels_last", torch.bfloat16, True, False),
    ("fp16 autocast + channels_last + GradScaler", torch.float16, True, False),
    ("bf16 autocast + channels_last + cudnn.benchmark", torch.bfloat16, True, True),
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model(name: str, device: torch.device, channels_last: bool) -> torch.nn.Module:
    # Random weights except Lite0, whose ImageNet weights ship with its package: speed does
    # not depend on the values (fresh random inputs every step keep it honest).
    model = build_model(name, 10, pretrained=name == "efficientnet_lite0", seed=0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(device, memory_format=fmt)


def _inputs(device: torch.device, batch: int, size: int, channels_last: bool, n: int = 3) -> list[torch.Tensor]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt) for _ in range(n)]


def train_rate(name: str, device: torch.device, mode: tuple, batch: int, size: int, steps: int,
               warmup: int) -> tuple[float, float]:
    """(images/s, last loss) of full fine-tuning steps in one precision mode."""
    _, dtype, cl, tune = mode
    torch.backends.cudnn.benchmark = tune
    model = _model(name, device, cl).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    xs = _inputs(device, batch, size, cl)
    y = torch.randint(0, 10, (batch,), device=device)
    loss = torch.zeros(())

    def step(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            out.backward()
            opt.step()
        else:
            scaler.scale(out).backward()
            scaler.step(opt)
            scaler.update()
        return out

    for i in range(warmup):
        step(xs[i % len(xs)])
    _sync(device)
    t = time.perf_counter()
    for i in range(steps):
        loss = step(xs[i % len(xs)])
    _sync(device)
    rate = batch * steps / (time.perf_counter() - t)
    return rate, float(loss.detach())


@torch.inference_mode()
def forward_rate(name: str, device: torch.device, dtype, batch: int, size: int, steps: int, warmup: int) -> float:
    """Images/s of eval-mode forwards (feature extraction's work) with or without bf16."""
    cl = dtype is not None
    torch.backends.cudnn.benchmark = False  # as tlcore runs
    model = _model(name, device, cl).eval()
    xs = _inputs(device, batch, size, cl)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for i in range(warmup):
            model(xs[i % len(xs)])
        _sync(device)
        t = time.perf_counter()
        for i in range(steps):
            model(xs[i % len(xs)])
        _sync(device)
    return batch * steps / (time.perf_counter() - t)


def _cli(what: str, args: list[str], env: dict, log: Path, timeout: float) -> dict:
    """Run a tlcore command: its row (exit code, wall seconds, its --json output, stderr's last line)."""
    t = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t
    with log.open("a") as f:
        f.write(f"$ {' '.join(args)}\n[rc {proc.returncode}, {wall:.1f} s]\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n")
    result = None
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith(("{", "[")):
            try:
                result = json.loads(line)
            except ValueError:
                pass
            break
    err = proc.stderr.strip().splitlines()
    return {"what": what, "rc": proc.returncode, "wall_s": wall, "result": result, "stderr": err[-1] if err else ""}


def engine_rows(work: Path, quick: bool, log: Path) -> list[dict]:
    """The real engine through its CLI on generated JPEGs, each command in its own process."""
    data = make_standin(work / "data", 12 if quick else 300, 6 if quick else 100, (500, 375))
    env = dict(os.environ, TLCORE_RUNS=str(work / "runs"), TLCORE_CACHE=str(work / "cache"), PYTHONUNBUFFERED="1")
    py = [sys.executable, "-m", "tlcore"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "tlcore"]
    epochs = "1" if quick else "3"
    common = ["--data", str(data), "--json", *(["--image-size", "64"] if quick else [])]
    lite0, resnet18 = ["train", "--backbone", "efficientnet_lite0"], ["train", "--backbone", "resnet18"]
    plans = [
        ("efficientnet_lite0 finetune", py + lite0 + ["--strategy", "finetune", "--epochs", epochs, *common]),
        ("efficientnet_lite0 feature_extraction",
         py + lite0 + ["--strategy", "feature_extraction", "--epochs", "5", *common]),
        ("efficientnet_lite0 gradual (1 head epoch)",
         py + lite0 + ["--strategy", "gradual", "--head-epochs", "1", "--epochs", epochs, *common]),
        ("resnet18 scratch, mlp head, flip-crop, cosine",
         py + resnet18 + ["--strategy", "scratch", "--epochs", epochs, "--head", "mlp", "--augment", "flip-crop",
                          "--schedule", "cosine", *common]),
        ("torchrun 1 GPU: efficientnet_lite0 finetune",
         torchrun + lite0 + ["--strategy", "finetune", "--epochs", epochs, *common]),
        ("torchrun 1 GPU: resnet18 scratch --sync-bn",
         torchrun + resnet18 + ["--strategy", "scratch", "--epochs", "1", "--sync-bn", *common]),
    ]
    rows = [_cli(label, args, env, log, timeout=240) for label, args in plans]
    finetuned = next((r["result"]["run_id"] for r in rows if r["what"].endswith("finetune") and r["result"]), None)
    if finetuned:
        photo = next((data / "val").rglob("*.jpg"))
        rows.append(_cli("predict --run (finetuned) --cam", py + ["predict", "--run", finetuned, "--topk", "2", "--cam",
                                                                  str(work / "cam"), "--json", str(photo)],
                         env, log, timeout=120))
        rows.append(_cli("export (ONNX checked against PyTorch)",
                         py + ["export", finetuned, "--out", str(work / "bundle"), "--json"], env, log, timeout=180))
    return rows


def _summary(result: dict | list | None) -> str:
    if isinstance(result, list) and result:  # predict: one entry per image
        top = result[0]["predictions"][0]
        return f"top-1 {top['label']} ({top['prob']:.2f}), CAM written: {bool(result[0].get('cam'))}"
    if not result:
        return ""
    keys = ("status", "best_val_acc", "epochs", "seconds", "message", "max_abs_diff", "top1_agree")
    return ", ".join(f"{k}={result[k]:.4g}" if isinstance(result[k], float) else f"{k}={result[k]}"
                     for k in keys if k in result and result[k] is not None)[:200]


def render(env: dict, train: list[dict], fwd: list[dict], engine: list[dict]) -> str:
    lines = ["# tlcore on a GPU", "", "Written by `python -m tlcore.bench.gpu` (see its docstring).", ""]
    lines += [f"- {k}: {v}" for k, v in env.items()] + [""]
    lines += ["## Fine-tuning steps (Adam, every parameter trains)", "",
              "| backbone | mode | images/s | vs fp32 | last loss |", "|---|---|---|---|---|"]
    for r in train:
        lines.append(f"| {r['backbone']} | {r['mode']} | {r['rate']:.0f} | {r['ratio']:.2f}x | {r['loss']:.3f} |")
    lines += ["", "## Feature extraction (eval forward, inference_mode)", "",
              "| backbone | mode | images/s | vs fp32 |", "|---|---|---|---|"]
    for r in fwd:
        lines.append(f"| {r['backbone']} | {r['mode']} | {r['rate']:.0f} | {r['ratio']:.2f}x |")
    lines += ["", "## The engine end to end (each a `python -m tlcore` process, import and start-up included)", "",
              "| command | exit | wall s | result |", "|---|---|---|---|"]
    for r in engine:
        lines.append(f"| {r['what']} | {r['rc']} | {r['wall_s']:.1f} | {_summary(r['result']) or r['stderr']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tlcore.bench.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes on any device: checks the script only")
    p.add_argument("--backbones", default="resnet18,efficientnet_lite0,resnet50,mobilenet_v3_large")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--skip-engine", action="store_true")
    p.add_argument("--out", type=Path, default=Path("bench/RESULTS-gpu.md"))
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size, batch, steps, warmup = (64, 4, 2, 1) if args.quick else (224, args.batch, args.steps, 5)
    names = args.backbones.split(",")[: 1 if args.quick else None]
    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "CUDA": torch.version.cuda, "python": platform.python_version(),
           "cuDNN TF32 convolutions (torch default)": torch.backends.cudnn.allow_tf32,
           "batch / image size / timed steps": f"{batch} / {size} px / {steps} after {warmup} warm-up",
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    train, fwd = [], []
    for name in names:
        base = None
        for mode in MODES:
            if mode[1] is not None and device.type != "cuda" and not args.quick:
                continue
            rate, loss = train_rate(name, device, mode, batch, size, steps, warmup)
            base = base or rate
            train.append({"backbone": name, "mode": mode[0], "rate": rate, "ratio": rate / base, "loss": loss})
            print(f"train {name:20s} {mode[0]:45s} {rate:8.0f} img/s  loss {loss:.3f}", flush=True)
        base = None
        for label, dtype in (("fp32", None), ("bf16 autocast + channels_last", torch.bfloat16)):
            rate = forward_rate(name, device, dtype, batch * 4, size, steps, warmup)
            base = base or rate
            fwd.append({"backbone": name, "mode": label, "rate": rate, "ratio": rate / base})
            print(f"forward {name:18s} {label:45s} {rate:8.0f} img/s", flush=True)
    engine = []
    if not args.skip_engine:
        work = Path(tempfile.mkdtemp(prefix="tlcore-gpu-"))
        log = args.out.with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        try:
            engine = engine_rows(work, args.quick, log)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for r in engine:
            print(f"engine {r['what']:45s} rc={r['rc']} {r['wall_s']:6.1f} s  {_summary(r['result']) or r['stderr']}")
    report = render(env, train, fwd, engine)
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
