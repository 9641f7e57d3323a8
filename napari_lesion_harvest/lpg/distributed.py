"""Several processes for the LPG with ``torchrun``: process group, sharding, gathering.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`init_distributed` joins the group (nccl on GPUs, gloo on CPU). Training
wraps the model in ``DistributedDataParallel`` (see
:func:`napari_lesion_harvest.lpg.train.train_lpg`); inference gives each rank a
shard of the volumes and gathers the detections on rank 0.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size`` on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """True on rank 0 (writes checkpoints and results)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when a process group with several ranks is running."""
        return self.world_size > 1


def current_context(device: str | None = None) -> DistributedContext:
    """The context of an already initialised process group, or a single process."""
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
    else:
        rank, world, local = 0, 1, 0
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    return DistributedContext(rank, world, local, device)


def init_distributed() -> DistributedContext:
    """Join the ``torchrun`` process group (no-op without ``WORLD_SIZE`` > 1)."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        use_cuda = torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return current_context()


def shard(items: list, context: DistributedContext) -> list:
    """Items ``rank, rank + world_size, ...`` of ``items`` (round-robin)."""
    return items[context.rank :: context.world_size]


def gather_to_main(value, context: DistributedContext) -> list | None:
    """Every rank's ``value`` on rank 0 (in rank order); ``None`` on other ranks."""
    if not context.active:
        return [value]
    import torch.distributed as dist

    gathered = [None] * context.world_size if context.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def any_rank(flag: bool, context: DistributedContext) -> bool:
    """True on every rank when ``flag`` is true on at least one rank."""
    if not context.active:
        return bool(flag)
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([1.0 if flag else 0.0], device=context.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def exit_launched_process(status: int) -> int:
    """End a ``torchrun`` worker with ``status`` once its work is done; returns it elsewhere.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) this flushes the output streams and
    the logs and leaves with :func:`os._exit`, skipping the interpreter's
    teardown. Once a gloo process group has served ``DistributedDataParallel``
    or a differentiable collective, torch keeps its worker threads alive after
    :func:`torch.distributed.destroy_process_group`, and tearing them down at
    exit aborts the process now and then ("terminate called without an active
    exception", SIGABRT), which makes ``torchrun`` report a finished run as
    failed. Call it only after every result is written and the store closed.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return status
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(status)
