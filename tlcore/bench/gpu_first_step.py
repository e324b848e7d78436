"""`python -m tlcore.bench.gpu_first_step`: a training process's first CUDA step, per precision mode.

bench/RESULTS-gpu.md found tlcore's CUDA default (bf16 autocast + channels_last) paying 4-10 s
in the first training step of a fresh process (cuDNN choosing engines for channels_last), and
no speed-up at the app's default batch of 16 for Lite0. Each row here is a fresh child process
(the cost is per process), so it shows, per backbone and mode, what that first step costs and
what the steps after it give, at the batch the app uses by default.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

MODES = {"fp32": (None, False), "fp32 + channels_last": (None, True),
         "bf16": ("bf16", False), "bf16 + channels_last": ("bf16", True)}


def child(backbone: str, mode: str, batch: int, steps: int) -> dict:
    """First step's seconds and the next `steps` steps' images/s, in this (fresh) process."""
    import torch
    import torch.nn.functional as F

    from tlcore.bench.gpu import _inputs, _model, _sync

    dtype = torch.bfloat16 if MODES[mode][0] else None
    cl = MODES[mode][1]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = _model(backbone, device, cl).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    xs = _inputs(device, batch, 224 if device.type == "cuda" else 64, cl)
    y = torch.randint(0, 10, (batch,), device=device)

    def step(x: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    _sync(device)
    t = time.perf_counter()
    step(xs[0])
    _sync(device)
    first = time.perf_counter() - t
    step(xs[1])  # the second step still allocates the optimizer's state
    _sync(device)
    t = time.perf_counter()
    for i in range(steps):
        step(xs[i % len(xs)])
    _sync(device)
    return {"first_s": first, "rate": batch * steps / (time.perf_counter() - t), "device": str(device)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tlcore.bench.gpu_first_step", description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default="efficientnet_lite0,resnet18")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--child", nargs=2, metavar=("BACKBONE", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.batch, args.steps)))
        return 0
    print(f"| backbone | mode | first step s | images/s after (batch {args.batch}) | process wall s |")
    print("|---|---|---:|---:|---:|", flush=True)
    for backbone in args.backbones.split(","):
        for mode in MODES:
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "tlcore.bench.gpu_first_step", "--child", backbone, mode,
                                   "--batch", str(args.batch), "--steps", str(args.steps)],
                                  capture_output=True, text=True, timeout=120)
            wall = time.perf_counter() - t
            if proc.returncode:
                print(f"| {backbone} | {mode} | failed: {proc.stderr.strip().splitlines()[-1][:120]} | | |", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"| {backbone} | {mode} | {r['first_s']:.2f} | {r['rate']:.0f} | {wall:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
