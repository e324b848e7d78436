"""Distributed training under torchrun: the process group, who writes, and how work is shared.

Everything DDP-specific lives here, as in torchvision's references/classification/utils.py
(`init_distributed_mode`, `is_main_process`): train.py only shards its batches, wraps the model
and reduces its counts through a `World`. A single process is a World of size 1 whose methods
change nothing, so the single-process loop computes exactly what it did before.
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tlcore.training.device import pick_device

# A peer that hangs (not one that dies: that fails at once) stops the others after this long.
TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("TLCORE_DIST_TIMEOUT_MIN", "30")))


class World:
    """This process's place among the training processes (rank 0 of 1 outside torchrun)."""

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0):
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self._wrapped: tuple[tuple, nn.Module] | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes the run folder, the feature cache and the output."""
        return self.rank == 0

    def describe(self, batch_size: int) -> dict | None:
        """What a run's config records about the processes (None for a single process)."""
        if self.size == 1:
            return None
        return processes_record(self.size, batch_size, dist.get_backend())

    # ---- sharding ----

    def shard_batches(self, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, int]]:
        """This rank's slice of each global batch (rows rank, rank+size, ...) and the batch's size.

        Every rank draws the same shuffled global batches from the same seeded generator, so the
        slices of all ranks together are exactly the single-process epoch, batch for batch.
        """
        return [(self._slice(idx), len(idx)) for idx in batches]

    def _slice(self, idx: torch.Tensor) -> torch.Tensor:
        m = len(idx)
        if m >= 2 * self.size:
            return idx[self.rank :: self.size]
        # Under 2 images per process (a last batch): pairs for the first m // 2 ranks (an odd one
        # joins the last pair), nothing for the others. A slice of one image crashes BatchNorm on
        # a 1x1 feature map; an empty one costs nothing and still joins the gradient all-reduce.
        pairs = m // 2
        if self.rank >= pairs:
            return idx[:0]
        return idx[2 * self.rank : m if self.rank == pairs - 1 else 2 * self.rank + 2]

    def rows(self, n: int) -> torch.Tensor:
        """The rows of an n-row split this rank evaluates or extracts: each row on one rank only."""
        return torch.arange(n)[self.rank :: self.size]

    def my_rows(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's `rows` of `t` (`t` itself, not a copy, in a single process)."""
        return t if self.size == 1 else t[self.rows(len(t))]

    def gather_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Every rank's `rows(n)` results put back in row order 0..n-1, on every rank."""
        if self.size == 1:
            return local
        per = -(-n // self.size)  # all_gather needs equal sizes: pad, then drop the padding
        padded = local.new_zeros((per, *local.shape[1:]))
        padded[: len(local)] = local
        padded = padded.to(_comm_device())
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded)
        out = local.new_empty((n, *local.shape[1:]))
        for r, part in enumerate(parts):
            out[r :: self.size] = part[: len(range(r, n, self.size))].to(out.device)
        return out

    # ---- reductions ----

    def loss(self, loss_fn, logits: torch.Tensor, y: torch.Tensor, batch_n: int) -> torch.Tensor:
        """The loss (`loss_fn`, e.g. F.cross_entropy) this rank back-propagates for its slice of a
        global batch of `batch_n`: the batch's mean loss in a single process."""
        if self.size == 1:
            return loss_fn(logits, y)
        # DDP averages gradients over ranks: this rank's summed loss times size / batch_n makes
        # that average the gradient of the global batch's mean loss, whatever the slices' sizes.
        return loss_fn(logits, y, reduction="sum") * (self.size / batch_n)

    def batch_stats(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """The global batch's mean loss and correct count, the same on every rank."""
        correct = (logits.argmax(1) == y).sum()
        if self.size == 1:
            return loss.item(), correct.item()
        t = torch.stack([loss.detach().double() / self.size, correct.double()]).to(_comm_device())
        dist.all_reduce(t)
        return t[0].item(), round(t[1].item())

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the ranks (exact for counts)."""
        if self.size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
        dist.all_reduce(t)
        return t.tolist()

    def end_epoch(self, module: nn.Module, epoch: int) -> None:
        """Give every rank rank 0's buffers, and raise if the ranks' weights differ.

        BatchNorm's running statistics last moved with each rank's own slice (DDP broadcasts
        rank 0's at the start of each forward only): every rank must evaluate the model that rank 0
        saves. The weights DDP keeps equal unless some gradients were not reduced.
        """
        if self.size == 1:
            return
        for buffer in module.buffers():
            synced = buffer.detach().to(_comm_device())
            dist.broadcast(synced, 0)
            buffer.copy_(synced)
        s = sum(p.detach().double().sum() for p in module.parameters()).reshape(1).to(_comm_device())
        both = torch.cat([s, -s])
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        hi, lo = both[0].item(), -both[1].item()
        if hi - lo > 1e-6 * max(1.0, abs(hi)):
            raise RuntimeError(f"the training processes' weights differ after epoch {epoch + 1} "
                               f"(checksums {lo!r} to {hi!r}): gradients were not all synchronised")

    # ---- the model ----

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` as this epoch trains it: DDP-wrapped, re-wrapped when what trains changed."""
        if self.size == 1:
            return module
        key = (id(module), tuple(id(p) for p in module.parameters() if p.requires_grad))
        if self._wrapped is None or self._wrapped[0] != key:
            # DDP hooks the parameters that require grad when it is built: after `gradual` unfreezes
            # the backbone, an older wrapper would leave those gradients un-reduced and the ranks
            # would drift apart. A new one reduces them all (and broadcasts rank 0's weights, which
            # are already everyone's). The old reducer's hooks stay idle: it never runs forward again.
            on_cuda = next(module.parameters()).device.type == "cuda"
            self._wrapped = None
            self._wrapped = (key, DistributedDataParallel(module, device_ids=[self.local_rank] if on_cuda else None))
        return self._wrapped[1]

    def lost_peer(self, exc: BaseException) -> bool:
        """Whether `exc` is a collective that failed because another process went away."""
        text = str(exc).lower()
        return self.size > 1 and (isinstance(exc, dist.DistError)
                                  or any(k in text for k in ("gloo", "nccl", "connection reset", "connection closed")))

    def failure(self, exc: BaseException) -> str:
        """The one-line reason a run stops when a collective failed (another process died)."""
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return (f"training process {self.rank} of {self.size} lost the others ({first}): another process "
                "stopped; its error is in torchrun's output")


def processes_record(size: int, batch_size: int, backend: str) -> dict:
    """config["distributed"] of a run over `size` processes: the global batch split over them."""
    return {"world_size": size, "global_batch_size": batch_size,
            "batch_size_per_process": -(-batch_size // size), "backend": backend}


def _comm_device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo works on CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device_name: str = "auto") -> World:
    """Join torchrun's process group (nccl on CUDA, gloo otherwise); a World of 1 outside torchrun."""
    if not launched():
        return World()
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)  # one GPU per process; "cuda" means this one from here on
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return World(rank, size, local_rank)


def leave(code: int) -> NoReturn:
    """End a torchrun process with `code` (0: its run finished) once everything it says is written.

    DDP keeps gloo's process group alive: its threads (gloo_tcp_loop, pt_gloo_runloop) still run
    after the model is deleted and destroy_process_group returns (torch 2.14). At interpreter exit
    one of them now and then aborts the process ("terminate called without an active exception",
    SIGABRT: 1 CI run in 6), and torchrun reports a run that finished as failed. So the process
    flushes its output and ends with os._exit: no interpreter or C++ teardown is left to run.
    The group is destroyed first after a finished run only: destroying is collective for NCCL and
    would wait, after a failure, for processes that are gone.
    """
    if code == 0 and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def current() -> World:
    """The World of this process: the initialised process group's, else a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def check_sync_bn(sync_bn: bool, device_name: str = "auto", world_size: int | None = None) -> None:
    """Raise ValueError when `--sync-bn` is asked for where it cannot work: it needs CUDA and torchrun.

    SyncBatchNorm all-reduces the statistics of every BatchNorm layer that trains over the
    processes' slices of a batch; PyTorch implements it for GPUs only (not gloo on CPU), and one
    process has nothing to synchronise with. Refusing says so at once instead of a run that does
    silently what the user did not ask for.
    """
    if not sync_bn:
        return
    size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    if size < 2 or pick_device(device_name).type != "cuda":
        raise ValueError("--sync-bn needs several processes on CUDA GPUs (SyncBatchNorm averages BatchNorm "
                         "statistics across GPUs): run `torchrun --nproc_per_node=N -m tlcore train --sync-bn ...` "
                         "on a machine with N GPUs, or leave out --sync-bn")


def sync_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """`model` with every BatchNorm layer a SyncBatchNorm (in place below the top); how many there are.

    Call it before the parameter groups are taken (they hold the layers). Frozen layers convert
    too, but strategies keep them in eval mode, where SyncBatchNorm uses its running statistics
    and never communicates: only the layers that train synchronise. Parameters and buffers keep
    their names, so the saved weights load into the plain model.
    """
    count = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return nn.SyncBatchNorm.convert_sync_batchnorm(model), count


class Terminated(Exception):
    """SIGTERM reached a torchrun process: torchrun stops the others when one of them exits."""


def raise_on_sigterm() -> None:
    """Turn SIGTERM into `Terminated` in the main thread, so rank 0 can record why the run stopped."""
    def handler(_signum, _frame):
        raise Terminated
    signal.signal(signal.SIGTERM, handler)


def test_exit_hook(world: World):
    """Test-only: an emit that ends this process after an epoch, to test a rank that dies.

    `TLCORE_TEST_EXIT_AFTER="RANK:EPOCH"` makes that rank exit with status 3 when it reports that
    epoch; unset (always, outside tests), the emit does nothing.
    """
    target = os.environ.get("TLCORE_TEST_EXIT_AFTER", "")

    def emit(kind: str, data: dict | None = None) -> None:
        if target and kind == "epoch" and target == f"{world.rank}:{data['epoch']}":
            os._exit(3)
    return emit
