"""`python -m tlcore.bench.kernels`: ms per image of each backbone's CPU kernels, by memory format and precision.

For each backbone (random weights, a new 2-class head), batch 16 at 224 px, the tuned
allocator: an eval forward (`inference_mode`) and a training step (forward, cross-entropy,
backward, Adam) in four arithmetics: fp32 contiguous, fp32 channels_last, bf16 autocast
contiguous and bf16 autocast channels_last. The settings are interleaved round by round, so a
burst of load from other processes hits them alike, and each keeps its fastest round.
Times are this process's CPU seconds, not wall clock: with one torch thread they are the
work itself, and on a 2-core machine shared with others' tests the wall clock measured mostly
the neighbours (3-10x the CPU time). `tlcore.training.device` picks the CPU defaults from this table.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import torch
import torch.nn.functional as F

from tlcore.bench.measure import Meter
from tlcore.models import backbones
from tlcore.training.device import tune_allocator

SETTINGS = (("fp32", torch.contiguous_format), ("fp32", torch.channels_last),
            ("bf16", torch.contiguous_format), ("bf16", torch.channels_last))
DEFAULT_BACKBONES = "simple_cnn,efficientnet_lite0,resnet18,mobilenet_v3_large,efficientnet_b0"


def _label(precision: str, fmt: torch.memory_format) -> str:
    return f"{precision} {'channels_last' if fmt == torch.channels_last else 'contiguous'}"


def _context(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def time_backbone(name: str, batch: int, size: int, rounds: int, log) -> dict[str, dict[str, float]]:
    """{setting: {"forward": ms/image, "train": ms/image}} for one backbone, best of `rounds`."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen)
    y = torch.randint(0, 2, (batch,), generator=gen)
    models = {}
    for precision, fmt in SETTINGS:
        model = backbones.build_model(name, 2, pretrained=False, seed=0).to(memory_format=fmt)
        models[precision, fmt] = (model, torch.optim.Adam(model.parameters(), lr=1e-4))
    best: dict[str, dict[str, float]] = {}
    for r in range(rounds):
        order = SETTINGS if r % 2 == 0 else SETTINGS[::-1]
        for precision, fmt in order:
            model, opt = models[precision, fmt]
            xf = x.contiguous(memory_format=fmt)
            model.eval()
            with torch.inference_mode(), _context(precision), Meter() as fwd:
                model(xf)
            model.train()
            with Meter() as step:
                with _context(precision):
                    loss = F.cross_entropy(model(xf).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            cell = best.setdefault(_label(precision, fmt), {"forward": 1e9, "train": 1e9, "others": 0.0})
            cell["forward"] = min(cell["forward"], fwd.cpu * 1000 / batch)
            cell["train"] = min(cell["train"], step.cpu * 1000 / batch)
            cell["others"] = max(cell["others"], step.others or 0.0)
            log(f"{name} round {r + 1} {_label(precision, fmt)}: forward {fwd.cpu * 1000 / batch:.1f} "
                f"train {step.cpu * 1000 / batch:.1f} CPU ms/image (wall {step.wall * 1000 / batch:.0f})")
    return best


def render(table: dict[str, dict[str, dict[str, float]]]) -> str:
    labels = [_label(p, f) for p, f in SETTINGS]
    lines = ["| backbone | pass | " + " | ".join(labels) + " | others' load (max) |",
             "|---|---|" + "---:|" * len(labels) + "---:|"]
    for name, cells in table.items():
        for kind in ("forward", "train"):
            base = cells[labels[0]][kind]
            vals = [f"{cells[lab][kind]:.1f} ({cells[lab][kind] / base:.2f}x)" for lab in labels]
            load = max(c["others"] for c in cells.values())
            lines.append(f"| {name} | {kind} | " + " | ".join(vals) + f" | {load:.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tlcore.bench.kernels", description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default=DEFAULT_BACKBONES)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tune_allocator()
    t0 = time.perf_counter()

    def log(message: str) -> None:
        print(f"{time.perf_counter() - t0:7.1f}s  {message}", file=sys.stderr, flush=True)

    table = {name: time_backbone(name, args.batch_size, args.image_size, args.rounds, log)
             for name in args.backbones.split(",")}
    print(f"CPU ms per image, best of {args.rounds} interleaved rounds; batch {args.batch_size}, {args.image_size} px, "
          f"{args.threads} thread(s), tuned allocator, random weights; CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; torch {torch.__version__}\n")
    print(render(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
