"""Harvest rounds on several processes (``torchrun``): who does what, and how ranks agree.

::

    torchrun --standalone --nproc_per_node 4 -m napari_lesion_harvest round PROJECT ...

Every rank runs the same stage loop (:func:`~napari_lesion_harvest.harvest.round.run_round`).
Rank 0 alone opens the project database: it checks the inputs, takes the round
lock, creates, starts, commits each stage and finishes rounds, and reads what
the stages need (the snapshot, proposals, the checkpoints' recorded sha256);
the other ranks receive all of it through :func:`from_main`. They hold the
project as a :class:`ProjectFolder` and read only model checkpoints (each
checked against the sha256 rank 0 sent) and the volumes' image files. SQLite's
WAL mode needs memory shared by every process that opens the database, which
processes on different nodes of a network file system do not share, so a
second node must never open ``project.sqlite``.

``train_lpg`` runs on every rank (``DistributedDataParallel``); ``scan`` and
the ``harvest`` scoring give each rank a shard of the volumes and gather the
results on rank 0; ``verify``, ``train_lpc`` and ``evaluate`` run on rank 0
while the others wait.

In one process (no ``WORLD_SIZE`` > 1) every helper here is a plain call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from napari_lesion_harvest.harvest.errors import RoundConfigError
from napari_lesion_harvest.lpg.distributed import DistributedContext, current_context

T = TypeVar("T")


def launched_rank() -> int:
    """This process's rank as ``torchrun`` set it (0 outside ``torchrun``)."""
    return int(os.environ.get("RANK", "0"))


@dataclass(frozen=True)
class ProjectFolder:
    """The project as a rank other than 0 holds it: its folder, where the model
    checkpoints are, and no database (see the module docstring).

    Attributes
    ----------
    folder : Path
        The project folder, as this rank sees it.
    """

    folder: Path


@contextmanager
def joined_ranks(device: str) -> Iterator[DistributedContext]:
    """Join the ``torchrun`` process group for the duration of the block.

    Parameters
    ----------
    device : str
        ``"cpu"`` (gloo backend) or ``"cuda"`` (nccl; each rank takes GPU
        ``LOCAL_RANK``), already resolved.

    Yields
    ------
    DistributedContext
        Rank, world size and this rank's device (``cuda:<LOCAL_RANK>`` on GPUs).
        A single process (no ``WORLD_SIZE`` > 1) gets rank 0 of 1 and ``device``.
        A process group that is already running is used, and left running.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        yield current_context(device if world <= 1 else _rank_device(device))
        return
    rank_device = _rank_device(device)
    if rank_device.startswith("cuda"):
        import torch

        torch.cuda.set_device(rank_device)
    dist.init_process_group(backend="nccl" if rank_device.startswith("cuda") else "gloo")
    try:
        yield current_context(rank_device)
    finally:
        dist.destroy_process_group()


def _rank_device(device: str) -> str:
    if device.startswith("cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def from_main(compute: Callable[[], T], context: DistributedContext, *, shared: bool = True):
    """Call ``compute`` on rank 0 only and give every rank its outcome.

    Parameters
    ----------
    compute : callable
        Run on rank 0 (store writes go here).
    shared : bool
        Send the return value to the other ranks (it must pickle); with False
        they get None, and the call only makes them wait for rank 0.

    Returns
    -------
    object
        ``compute()``'s value on every rank (on rank 0 only when not ``shared``).

    Raises
    ------
    Exception
        What ``compute`` raised, on every rank (rank 0 re-raises its own; the
        others raise a copy, or a ``RuntimeError`` naming it when it does not pickle).
    """
    if not context.active:
        return compute()
    import pickle

    import torch.distributed as dist

    message: list = [None]
    error = None
    if context.is_main:
        try:
            value = compute()
            message = [("value", value if shared else None)]
        except BaseException as raised:
            error = raised
            try:
                pickle.dumps(raised)
                message = [("error", raised)]
            except Exception:
                message = [("error", RuntimeError(f"rank 0: {type(raised).__name__}: {raised}"))]
    dist.broadcast_object_list(message, src=0)
    if error is not None:
        raise error
    kind, payload = message[0]
    if kind == "error" and not context.is_main:
        raise payload
    return value if context.is_main else payload


def merged_from_ranks(part: dict, context: DistributedContext) -> dict | None:
    """Every rank's ``part`` (keyed results of its shard) merged on rank 0; None elsewhere."""
    from napari_lesion_harvest.lpg.distributed import gather_to_main

    gathered = gather_to_main(part, context)
    if gathered is None:
        return None
    return {key: value for each in gathered for key, value in each.items()}


def per_rank_batch(global_batch: int, context: DistributedContext) -> int:
    """The batch each rank trains on so that the global batch stays ``global_batch``.

    Raises
    ------
    RoundConfigError
        ``global_batch`` is not a multiple of the number of ranks.
    """
    if global_batch % context.world_size:
        raise RoundConfigError(
            f"lpg.batch_size {global_batch} cannot be split evenly over "
            f"{context.world_size} processes; use a multiple of {context.world_size}"
        )
    return global_batch // context.world_size
