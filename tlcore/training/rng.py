"""A run's randomness is its own: seeded model builds and generator-bound dropout.

torch's default generator is process-wide. In the app, a training thread shares it with the
pages (the Predict page builds models) and with other runs, so anything drawn from it (head
initialisation, dropout masks, stochastic depth) would depend on what else the process did
meanwhile, and the same seed would not give the same run. So:

* a new head draws its initial weights from a generator of its own (heads.make_head);
* a backbone's random initial weights (scratch, simple_cnn) come from the global generator,
  but only under `BUILD_LOCK`, held by every model build in tlcore, inside a forked RNG
  seeded for that build (`seeded_build`), which leaves the global state as it was;
* during training, every stochastic module draws from the run's own generator
  (`bind_generator` swaps `nn.Dropout` and torchvision's `StochasticDepth` for equivalents
  that take one).

The alternative, a worker process per run, isolates randomness too but costs a torch import
(1.5-3 s) per run and a copy of the decoded data across the process boundary; see jobs.py.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

import torch
from torch import nn

# Held by every model build in the process (re-entrant: a build may call another builder).
BUILD_LOCK = threading.RLock()


@contextlib.contextmanager
def seeded_build(seed: int | None = None) -> Iterator[None]:
    """Hold the build lock; with a seed, draw from a forked CPU generator seeded with it."""
    with BUILD_LOCK:
        if seed is None:
            yield
            return
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield


class GeneratorDropout(nn.Module):
    """nn.Dropout that draws its masks from a given generator."""

    def __init__(self, p: float, generator: torch.Generator):
        super().__init__()
        self.p = p
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return torch.zeros_like(x)
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GeneratorStochasticDepth(nn.Module):
    """torchvision's StochasticDepth, drawing from a given generator."""

    def __init__(self, p: float, mode: str, generator: torch.Generator):
        super().__init__()
        self.p, self.mode, self.generator = p, mode, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival, generator=self.generator)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


def _stochastic_depth_class() -> type | None:
    """torchvision's StochasticDepth class, or None when its module was never imported.

    Importing torchvision.ops costs over a second (it pulls torch._dynamo); a model can only hold
    a StochasticDepth if something already imported its module, so looking it up is enough.
    """
    module = sys.modules.get("torchvision.ops.stochastic_depth")
    return None if module is None else module.StochasticDepth


def bind_generator(model: nn.Module, generator: torch.Generator) -> int:
    """Swap each dropout / stochastic-depth module for one drawing from `generator`.

    Neither has parameters or buffers, so the state dict is unchanged. Returns how many
    modules were swapped.
    """
    swaps = []
    stochastic_depth = _stochastic_depth_class()
    for name, module in model.named_modules():
        if type(module) is nn.Dropout:  # the only dropout kind in the registry's backbones and heads
            swaps.append((name, GeneratorDropout(module.p, generator)))
        elif stochastic_depth is not None and isinstance(module, stochastic_depth):
            swaps.append((name, GeneratorStochasticDepth(module.p, module.mode, generator)))
    for name, new in swaps:
        parent, _, leaf = name.rpartition(".")
        new.train(model.get_submodule(name).training)
        setattr(model.get_submodule(parent) if parent else model, leaf, new)
    return len(swaps)


def device_generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator on `device` (dropout masks are drawn where the activations are)."""
    return torch.Generator(device=device).manual_seed(seed)
