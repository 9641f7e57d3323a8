"""Training and fine-tuning of the MSCN lesion proposal generator.

Round 1 trains from scratch (ImageNet trunk when available); later rounds
fine-tune from the previous checkpoint with hard negatives (HNSL). Runs in one
process or under ``torchrun`` (``DistributedDataParallel``; each rank takes
its part of every global batch).

Determinism: the sample order and every augmentation draw depend only on
``(seed, step, position in the global batch)``, so a resumed run and a run on
a different number of ranks see the same samples.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_lesion_harvest.lpg.config import (
    DEFAULT_PRECISION,
    LPGConfig,
    get_config,
    uses_bfloat16,
)
from napari_lesion_harvest.lpg.data import LPGSample, SliceAugmentation, collate, make_example

#: ``progress(step, total_steps, loss_parts)`` after every step.
ProgressCallback = Callable[[int, int, dict[str, float]], None]


@dataclass(frozen=True)
class LPGTrainOptions:
    """Optimisation settings; the defaults are the ``paper`` preset's.

    Attributes
    ----------
    steps : int
        Total optimiser steps (of the whole run, including resumed ones).
    batch_size : int
        Samples per step and per rank.
    learning_rate, weight_decay : float
    optimizer : str
        ``"adamw"`` or ``"sgd"`` (momentum 0.9).
    warmup_steps : int
        Linear warm-up, then cosine decay to 0.
    grad_clip : float
        Max gradient norm (0 disables).
    canvas_size : int, optional
        Square training canvas (pixels); default ``config.max_side``.
    seed : int
    checkpoint_every : int
        Save every N steps (0: only at the end or on stop).
    augmentation : SliceAugmentation or None
    loader_workers : int, optional
        Worker processes that build the next batches (stacks, augmentation,
        targets) while the network trains on the current one. Default: up to 4
        on CUDA (CPU cores permitting), none on the CPU. The batches are the
        same with any number of workers.
    precision : {"auto", "float32", "bfloat16"}
        :data:`~napari_lesion_harvest.lpg.config.PRECISIONS`: in bfloat16, the forward
        pass runs under bfloat16 autocast with NHWC weights and inputs (the loss and
        the optimiser in float32); ``auto`` is bfloat16 on CUDA only.
    """

    steps: int = 20000
    batch_size: int = 16
    learning_rate: float = 2e-4
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    warmup_steps: int = 50
    grad_clip: float = 10.0
    canvas_size: int | None = None
    seed: int = 0
    checkpoint_every: int = 0
    augmentation: SliceAugmentation | None = field(default_factory=SliceAugmentation)
    loader_workers: int | None = None
    precision: str = DEFAULT_PRECISION


@dataclass
class LPGTrainResult:
    """What :func:`train_lpg` did.

    Attributes
    ----------
    model : MultiSliceCenterNet
        The trained model (unwrapped, on the training device, eval mode).
    step : int
        Steps completed.
    history : list of dict
        Loss parts of each step run in this call.
    stopped : bool
        True when ``should_stop`` ended training early.
    checkpoint_path : Path or None
    canvas_size : int
        Side (pixels) of the square canvas the batches were built on.
    resume_refused : str or None
        Why the training checkpoint to resume from was not loaded (its content is not
        the recorded sha256's: damaged, replaced, or written by a process killed
        before it could record it); training then started from its first step.
    """

    model: object
    step: int
    history: list[dict[str, float]]
    stopped: bool
    checkpoint_path: Path | None
    canvas_size: int
    resume_refused: str | None = None


def learning_rate_at(step: int, options: LPGTrainOptions) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 at ``steps``."""
    if step < options.warmup_steps:
        return options.learning_rate * (step + 1) / options.warmup_steps
    span = max(1, options.steps - options.warmup_steps)
    progress = min(1.0, (step - options.warmup_steps) / span)
    return options.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))


def global_batch_indices(step: int, batch: int, num_samples: int, seed: int) -> list[int]:
    """Sample indices of the global batch of ``step`` (one seeded permutation per epoch)."""
    positions = range(step * batch, (step + 1) * batch)
    epochs = {p // num_samples for p in positions}
    orders = {e: np.random.default_rng([seed, e]).permutation(num_samples) for e in epochs}
    return [int(orders[p // num_samples][p % num_samples]) for p in positions]


class StepBatches:
    """This rank's training batch of every step from ``start``, built on demand.

    Item ``i`` is the batch of step ``start + i``: ``inputs`` (B, 9, H, W) and the
    collated targets, a pure function of ``(seed, step, rank)``, so it can be built
    in any process (``torch.utils.data.DataLoader`` workers) in any order.
    """

    def __init__(self, samples, config, options: LPGTrainOptions, *, canvas, start, rank, ranks):
        self.samples, self.config, self.options = samples, config, options
        self.canvas, self.start, self.rank, self.ranks = canvas, start, rank, ranks

    def __len__(self) -> int:
        return max(0, self.options.steps - self.start)

    def __getitem__(self, index: int):
        step, batch = self.start + index, self.options.batch_size
        indices = global_batch_indices(
            step, batch * self.ranks, len(self.samples), self.options.seed
        )
        first = self.rank * batch
        return collate(
            [
                make_example(
                    self.samples[sample],
                    self.config,
                    canvas_shape=(self.canvas, self.canvas),
                    rng=np.random.default_rng([self.options.seed, step, first + k]),
                    augmentation=self.options.augmentation,
                )
                for k, sample in enumerate(indices[first : first + batch])
            ]
        )


def loader_workers(options: LPGTrainOptions, device: str) -> int:
    """Batch-building worker processes for ``device`` (see ``LPGTrainOptions.loader_workers``)."""
    if options.loader_workers is not None:
        return max(0, int(options.loader_workers))
    if not device.startswith("cuda"):
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _batches(batches: StepBatches, workers: int, pin_memory: bool):
    """Iterate ``batches`` in order, in this process or prefetched by worker processes."""
    if workers == 0:
        return (batches[index] for index in range(len(batches)))
    from torch.utils.data import DataLoader

    return iter(
        DataLoader(
            batches,
            batch_size=None,
            num_workers=workers,
            pin_memory=pin_memory,
            prefetch_factor=2,
        )
    )


def _make_optimizer(model, options: LPGTrainOptions):
    import torch

    if options.optimizer == "adamw":
        return torch.optim.AdamW(
            model.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay
        )
    if options.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=options.learning_rate,
            momentum=0.9,
            weight_decay=options.weight_decay,
        )
    raise ValueError(f"unknown optimizer {options.optimizer!r}; use 'adamw' or 'sgd'")


def train_lpg(
    samples: Sequence[LPGSample],
    *,
    config: str | LPGConfig = "lite",
    options: LPGTrainOptions | None = None,
    init_checkpoint: str | os.PathLike | None = None,
    init_sha256: str | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = True,
    resume_sha256: str | None = None,
    on_checkpoint: Callable[[str, int], None] | None = None,
    pretrained: bool = True,
    pretrained_trunk: tuple[str | os.PathLike, str | None] | None = None,
    device: str | None = None,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LPGTrainResult:
    """Train (or fine-tune) MSCN on slices with lesion and hard-negative boxes.

    Parameters
    ----------
    samples : sequence of LPGSample
        The whole training set (every rank passes the same list).
    config : str or LPGConfig
        Architecture for training from scratch; ignored when a checkpoint
        gives the model (fine-tuning or resuming).
    options : LPGTrainOptions
    init_checkpoint : path, optional
        Fine-tune: start from these weights with a fresh optimiser at step 0.
    init_sha256 : str, optional
        The sha256 recorded for ``init_checkpoint``: other content is refused
        (:class:`~napari_lesion_harvest.store.ChecksumMismatchError`).
    checkpoint_path : path, optional
        Where checkpoints go (rank 0 writes, atomically and durably). With
        ``resume`` and an existing file, training continues from its step,
        weights and optimiser.
    resume : bool
    resume_sha256 : str, optional
        The sha256 recorded for the checkpoint to resume from: other content is
        not loaded, and training starts from its first step (``resume_refused``).
    on_checkpoint : callable, optional
        ``on_checkpoint(sha256, size)`` on rank 0 once each checkpoint is
        durable on disk (to record it).
    pretrained : bool
        ImageNet trunk for a new model (when on disk; never downloaded).
    pretrained_trunk : (path, sha256), optional
        Self-supervised trunk weights for a new model instead
        (:func:`~napari_lesion_harvest.lpg.pretrain.load_pretrained_trunk`; the file
        must have the recorded sha256 and fit ``config``).
    device : str, optional
        Default: this rank's GPU if any, else CPU.
    progress : callable, optional
        ``progress(step, total_steps, {"total", "heatmap", "size", "offset", "lr"})``.
    should_stop : callable, optional
        Checked between steps; True saves a checkpoint and returns ``stopped=True``.

    Returns
    -------
    LPGTrainResult
    """
    import torch

    from napari_lesion_harvest.lpg.checkpoint import (
        load_checkpoint,
        model_from_checkpoint,
        save_checkpoint,
    )
    from napari_lesion_harvest.lpg.distributed import any_rank, current_context
    from napari_lesion_harvest.lpg.losses import mscn_loss
    from napari_lesion_harvest.lpg.model import build_model
    from napari_lesion_harvest.store import ChecksumMismatchError

    options = options or LPGTrainOptions()
    if not samples:
        raise ValueError("train_lpg: no training samples")
    context = current_context(device)
    checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
    torch.manual_seed(options.seed)

    resumed, resume_refused = None, None
    if resume and checkpoint_path is not None and checkpoint_path.is_file():
        try:
            resumed = load_checkpoint(checkpoint_path, sha256=resume_sha256)
        except ChecksumMismatchError as error:
            # Not loaded; a training checkpoint only saves time, so train from step 0.
            resume_refused = str(error)
    if resumed is not None:
        model = model_from_checkpoint(resumed)
    elif init_checkpoint is not None:
        model = model_from_checkpoint(load_checkpoint(init_checkpoint, sha256=init_sha256))
    else:
        model = build_model(get_config(config), pretrained=pretrained and not pretrained_trunk)
        if pretrained_trunk is not None:
            from napari_lesion_harvest.lpg.pretrain import load_pretrained_trunk

            load_pretrained_trunk(model, pretrained_trunk[0], sha256=pretrained_trunk[1])
    config = model.config
    device_type = torch.device(context.device).type
    use_cuda = device_type == "cuda"
    # bfloat16 with NHWC weights and inputs: docs/experiments/lpg-gpu-training.md (GPUs),
    # docs/experiments/cpu-efficiency.md (CPUs).
    bfloat16 = uses_bfloat16(options.precision, device_type)
    memory_format = torch.channels_last if bfloat16 else torch.contiguous_format
    model.to(context.device, memory_format=memory_format).train()
    optimizer = _make_optimizer(model, options)
    start = 0
    if resumed is not None:
        start = int(resumed["step"])
        if resumed.get("optimizer"):
            optimizer.load_state_dict(resumed["optimizer"])

    network = model
    # Under DDP: BatchNorm and loss normalisation over the global batch, so that
    # training equals one process holding the global batch (up to rounding).
    loss_options = {}
    if context.active:
        from torch.nn.parallel import DistributedDataParallel

        from napari_lesion_harvest.lpg.sync_norm import synchronise_batch_norm

        synchronise_batch_norm(model, context.device)
        loss_options = {"count": _sum_over_ranks, "world_size": context.world_size}
        device_ids = [context.local_rank] if context.device.startswith("cuda") else None
        network = DistributedDataParallel(model, device_ids=device_ids)

    canvas = options.canvas_size or config.max_side
    canvas -= canvas % config.size_divisor
    history: list[dict[str, float]] = []
    stopped = False

    def checkpoint(step: int) -> None:
        if checkpoint_path is not None and context.is_main:
            written = save_checkpoint(
                checkpoint_path,
                model,
                step=step,
                total_steps=options.steps,
                optimizer=optimizer,
            )
            if on_checkpoint is not None:
                on_checkpoint(*written)

    batches = StepBatches(
        samples,
        config,
        options,
        canvas=canvas,
        start=start,
        rank=context.rank,
        ranks=context.world_size,
    )
    step = start
    pending = _batches(batches, loader_workers(options, context.device), use_cuda)
    while step < options.steps:
        if should_stop is not None and any_rank(should_stop(), context):
            stopped = True
            break
        inputs, targets = next(pending)  # built only once the step is sure to run
        inputs = inputs.to(context.device, non_blocking=True, memory_format=memory_format)
        targets = {k: v.to(context.device, non_blocking=True) for k, v in targets.items()}
        learning_rate = learning_rate_at(step, options)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bfloat16):
            outputs = network(inputs)
        parts = mscn_loss(outputs, targets, config, **loss_options)
        optimizer.zero_grad(set_to_none=True)
        parts["total"].backward()
        if options.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
        optimizer.step()
        step += 1
        record = _global_losses(parts, context) | {"lr": learning_rate}
        history.append(record)
        if progress is not None:
            progress(step, options.steps, record)
        if options.checkpoint_every and step % options.checkpoint_every == 0:
            checkpoint(step)
    if context.active:
        from napari_lesion_harvest.lpg.sync_norm import restore_batch_norm

        restore_batch_norm(model)
    checkpoint(step)
    model.eval()
    return LPGTrainResult(model, step, history, stopped, checkpoint_path, canvas, resume_refused)


def _sum_over_ranks(count):
    """``count`` summed over the ranks (not differentiated: it only normalises)."""
    import torch.distributed as dist

    total = count.detach().float().clone()
    dist.all_reduce(total)
    return total


def _global_losses(parts: dict, context) -> dict[str, float]:
    """The loss parts of the global batch (the ranks' mean under DDP, where each rank's
    part is normalised by the global batch)."""
    if not context.active:
        return {k: float(v.detach()) for k, v in parts.items()}
    import torch
    import torch.distributed as dist

    names = list(parts)
    values = torch.stack([parts[k].detach().float() for k in names])
    dist.all_reduce(values)
    return {k: float(v) / context.world_size for k, v in zip(names, values, strict=True)}
