"""Self-supervised pretraining of the LPG trunk on unlabelled CT.

Two pretexts (:data:`PRETEXTS`), both on the LPG's own stacks
(:func:`~napari_lesion_harvest.lpg.data.make_example`: same HU window, 2 mm
interval, spacing, ``max_side``, zoom / shift / flip augmentation) of random
slices of the volumes given; no label of any kind is read:

``restoration`` (Models Genesis)
    The MSCN (:mod:`napari_lesion_harvest.lpg.model`) without its CenterNet heads,
    whose fused stride-4 map feeds a small restoration head (3x3 conv, ReLU, 1x1
    conv to ``3 x stride^2`` channels, pixel shuffle), learns to restore the centre
    three slices of a 9-slice stack from a corrupted copy
    (:mod:`napari_lesion_harvest.lpg.corruption`); the loss is their mean squared
    error in [0, 1] intensities.
``blobs``
    The whole MSCN learns the LPG's own task (CenterNet heatmap, size and offset,
    :func:`~napari_lesion_harvest.lpg.losses.mscn_loss`) on pseudo-objects: the
    blobs of each slice (:mod:`napari_lesion_harvest.lpg.blobs`), round regions
    brighter or darker than their surroundings, every other cell background.

Only the trunk, the 3D fusion and the top-down path
(:func:`~napari_lesion_harvest.lpg.model.trunk_state`) are kept for training
the LPG (:func:`load_pretrained_trunk`); the pretext's heads are discarded.

Checkpoint (written by the package's durable writer, read weights-only)::

    {"kind": "lpg-pretrain", "format_version": 1, "config": LPGConfig.to_dict(),
     "pretext": str (absent: restoration),
     "model": state_dict (``mscn.*``, and ``restore.*`` for restoration),
     "optimizer": state_dict, "step": int, "total_steps": int, "seconds": float,
     "seed": int}

Every random draw of step ``s`` comes from ``numpy.random.default_rng([seed, s, k])``
(``k`` = position in the batch), so a resumed run draws what an uninterrupted
one would.

:func:`train_pretext` is the training loop (optimiser, warm-up and cosine
learning rate, time budget, stop, durable checkpoints, resume) that the LPC's
pretraining (:mod:`napari_lesion_harvest.lpc.pretrain`) runs too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpg.blobs import blob_boxes
from napari_lesion_harvest.lpg.config import (
    DEFAULT_PRETEXT,
    PRETEXTS,
    RESTORATION,
    LPGConfig,
    get_config,
)
from napari_lesion_harvest.lpg.corruption import corrupt, from_unit, to_unit
from napari_lesion_harvest.lpg.data import LPGSample, SliceAugmentation, collate, make_example
from napari_lesion_harvest.lpg.train import LPGTrainOptions, learning_rate_at
from napari_lesion_harvest.store.checkpoints import CheckpointError

CHECKPOINT_KIND = "lpg-pretrain"
CHECKPOINT_VERSION = 1
#: LPG configuration fields the pretrained weights must share with the LPG that
#: loads them: the architecture and what its input intensities and geometry mean.
FITTING_FIELDS = (
    "growth_rate",
    "num_init_features",
    "bn_size",
    "block_config",
    "feature_channels",
    "slice_interval_mm",
    "pixel_spacing_mm",
    "hu_window",
    "pixel_mean",
)
#: Default optimisation: batches of four 128-pixel crops (a Models Genesis-sized
#: context, four times cheaper per sample than the ``lite`` 256-pixel canvas).
DEFAULT_OPTIONS = LPGTrainOptions(
    steps=2000,
    batch_size=4,
    learning_rate=1e-3,
    warmup_steps=50,
    canvas_size=128,
    augmentation=SliceAugmentation(box_centred_crop=True),
)

#: ``progress(step, total_steps, {"loss", "lr"})`` after every step.
ProgressCallback = Callable[[int, int, dict[str, float]], None]


def restoration_network(config: LPGConfig):
    """The MSCN trunk, fusion and top-down path with a restoration head.

    Returns
    -------
    torch.nn.Module
        ``forward(stacks)`` maps ``(B, 9, H, W)`` network intensities to the restored
        centre three slices ``(B, 3, H, W)`` in [0, 1]. Attribute ``mscn`` is the
        MSCN whose heads are identities (its forward returns the fused map).
    """
    from torch import nn

    from napari_lesion_harvest.lpg.model import build_model

    class RestorationNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.mscn = build_model(config, pretrained=False)
            for head in ("heatmap_head", "size_head", "offset_head"):
                setattr(self.mscn, head, nn.Identity())
            features, stride = config.feature_channels, config.stride
            self.restore = nn.Sequential(
                nn.Conv2d(features, features, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(features, 3 * stride * stride, 1),
                nn.PixelShuffle(stride),
            )

        def forward(self, stacks):
            return self.restore(self.mscn(stacks)["heatmap"])

    return RestorationNetwork()


class PretrainSlices:
    """The slices pretraining draws from: every slice of the given volumes, uniformly.

    Parameters
    ----------
    volumes : sequence of CTVolume
        The volumes to learn from (a project's training volumes; never its
        evaluation volumes).
    """

    def __init__(self, volumes: Sequence[CTVolume]):
        if not volumes:
            raise ValueError("pretraining needs at least one volume")
        self.volumes = list(volumes)
        self._ends = np.cumsum([v.num_slices for v in self.volumes])

    @property
    def volume_ids(self) -> list[str]:
        """The ids of the volumes drawn from."""
        return [v.volume_id for v in self.volumes]

    @property
    def num_slices(self) -> int:
        """Slices of all volumes together."""
        return int(self._ends[-1])

    def draw(self, rng: np.random.Generator) -> tuple[CTVolume, int]:
        """A random slice: its volume and index ``z``."""
        index = int(rng.integers(self.num_slices))
        which = int(np.searchsorted(self._ends, index, side="right"))
        start = int(self._ends[which - 1]) if which else 0
        return self.volumes[which], index - start


def pretext_examples(
    slices: PretrainSlices,
    config: LPGConfig,
    options: LPGTrainOptions,
    step: int,
    *,
    boxes_of: Callable[[CTVolume, int], np.ndarray] | None = None,
):
    """The examples of ``step``: for each of ``options.batch_size`` positions ``k``, a
    random slice drawn with ``numpy.random.default_rng([seed, step, k])`` made into an
    LPG example on the square pretraining canvas.

    Parameters
    ----------
    boxes_of : callable, optional
        ``boxes_of(volume, z)``: the ``xyxy`` boxes (N, 4) the targets are built from, in
        the slice's pixel coordinates (default: none).

    Yields
    ------
    stack : Tensor, shape (9, H, W)
        Network intensities.
    targets : CenterNetTargets
    rng : numpy.random.Generator
        The position's generator, after the example's draws.
    """
    canvas = min(options.canvas_size or config.max_side, config.max_side)
    canvas -= canvas % config.size_divisor
    for k in range(options.batch_size):
        rng = np.random.default_rng([options.seed, step, k])
        volume, z = slices.draw(rng)
        boxes = np.zeros((0, 4)) if boxes_of is None else boxes_of(volume, z)
        stack, targets = make_example(
            LPGSample(volume, z, boxes),
            config,
            canvas_shape=(canvas, canvas),
            rng=rng,
            augmentation=options.augmentation,
        )
        yield stack, targets, rng


def restoration_batch(
    slices: PretrainSlices,
    config: LPGConfig,
    options: LPGTrainOptions,
    step: int,
):
    """The corrupted inputs and restoration targets of ``step``.

    Returns
    -------
    inputs : Tensor, shape (B, 9, H, W)
        Corrupted stacks in network intensities.
    targets : Tensor, shape (B, 3, H, W)
        The centre three slices of the clean stacks, in [0, 1].
    """
    import torch

    inputs, targets = [], []
    centre = config.num_slices // 2
    for stack, _, rng in pretext_examples(slices, config, options, step):
        clean = to_unit(stack.numpy(), config)
        inputs.append(from_unit(corrupt(clean, rng), config))
        targets.append(clean[centre - 1 : centre + 2])
    return torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(targets))


def blob_network(config: LPGConfig):
    """The whole MSCN, its forward wrapped so that its weights are named ``mscn.*``.

    Returns
    -------
    torch.nn.Module
        ``forward(stacks)`` maps ``(B, 9, H, W)`` network intensities to the MSCN's
        outputs (``heatmap``, ``size``, ``offset`` on the stride-4 grid).
    """
    from torch import nn

    from napari_lesion_harvest.lpg.model import build_model

    class BlobNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.mscn = build_model(config, pretrained=False)

        def forward(self, stacks):
            return self.mscn(stacks)

    return BlobNetwork()


def blob_batch(slices: PretrainSlices, config: LPGConfig, options: LPGTrainOptions, step: int):
    """The stacks of ``step`` and the CenterNet targets of their centre slices' blobs
    (:func:`~napari_lesion_harvest.lpg.blobs.blob_boxes` in the LPG's HU window).

    Returns
    -------
    inputs : Tensor, shape (B, 9, H, W)
        Stacks in network intensities.
    targets : dict of Tensor
        As :func:`~napari_lesion_harvest.lpg.data.collate` gives them.
    """

    def blobs(volume: CTVolume, z: int) -> np.ndarray:
        pixel_mm = float(np.mean(volume.spacing[1:]))
        return blob_boxes(volume.slice(z), pixel_mm=pixel_mm, hu_window=config.hu_window)

    examples = pretext_examples(slices, config, options, step, boxes_of=blobs)
    return collate([(stack, targets) for stack, targets, _ in examples])


@dataclass
class PretrainResult:
    """What :func:`pretrain_trunk` did.

    Attributes
    ----------
    step : int
        Steps done (of all runs).
    total_steps : int
    seconds : float
        Training time of all runs.
    losses : list of float
        Restoration loss of each step of this run.
    stopped : bool
        ``should_stop`` or the time budget ended the run before ``total_steps``.
    """

    step: int
    total_steps: int
    seconds: float
    losses: list[float]
    stopped: bool


def pretrain_trunk(
    slices: PretrainSlices,
    checkpoint_path: str | os.PathLike | Callable[[int], Path],
    *,
    config: str | LPGConfig = "lite",
    options: LPGTrainOptions = DEFAULT_OPTIONS,
    pretext: str = DEFAULT_PRETEXT,
    resume_from: tuple[str | os.PathLike, str | None] | None = None,
    **loop,
) -> PretrainResult:
    """Pretrain (or continue pretraining) the LPG trunk.

    Parameters
    ----------
    slices : PretrainSlices
    checkpoint_path : path, or callable
        As for :func:`train_pretext`.
    config : str or LPGConfig
        Of a new run; a resumed run keeps the checkpoint's.
    options : LPGTrainOptions
        ``steps`` (the planned total, also of a resumed run), ``batch_size``,
        ``learning_rate`` (warm-up then cosine decay), ``weight_decay``,
        ``optimizer``, ``grad_clip``, ``canvas_size``, ``seed`` and ``augmentation``.
    pretext : {"restoration", "blobs"}
        :data:`PRETEXTS`, of a new run; a resumed run keeps the checkpoint's.
    resume_from : (path, sha256), optional
        Continue from this checkpoint; with a recorded sha256, other content is
        refused (:class:`~napari_lesion_harvest.store.ChecksumMismatchError`).
    **loop
        ``minutes``, ``save_every_s``, ``on_checkpoint``, ``device``, ``progress``,
        ``should_stop``: as for :func:`train_pretext`.

    Returns
    -------
    PretrainResult

    Raises
    ------
    ValueError
        Unknown ``pretext``.
    """
    resumed = None
    if resume_from is not None:
        resumed = read_pretrained(resume_from[0], sha256=resume_from[1])
        config = get_config(resumed["config"])
        pretext = resumed.get("pretext", RESTORATION)
    if pretext not in PRETEXTS:
        raise ValueError(f"pretext must be one of {', '.join(PRETEXTS)}, got {pretext!r}")
    config = get_config(config)
    if pretext == "blobs":
        from napari_lesion_harvest.lpg.losses import mscn_loss

        network, batch_of = blob_network, blob_batch

        def loss(outputs, targets):
            return mscn_loss(outputs, targets, config)["total"]
    else:
        network, batch_of, loss = restoration_network, restoration_batch, None
    return train_pretext(
        lambda: network(config),
        lambda step: batch_of(slices, config, options, step),
        checkpoint_path,
        header={
            "kind": CHECKPOINT_KIND,
            "format_version": CHECKPOINT_VERSION,
            "config": config.to_dict(),
            "pretext": pretext,
        },
        options=options,
        loss=loss,
        resumed=resumed,
        **loop,
    )


def train_pretext(
    build_network: Callable[[], object],
    batch_of: Callable[[int], tuple],
    checkpoint_path: str | os.PathLike | Callable[[int], Path],
    *,
    header: dict,
    options,
    loss: Callable | None = None,
    resumed: dict | None = None,
    minutes: float | None = None,
    save_every_s: float = 60.0,
    on_checkpoint: Callable[[Path, str, int, int, float], None] | None = None,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PretrainResult:
    """The training loop of every self-supervised pretraining (the LPG's trunk here,
    the LPC's view trunks in :mod:`napari_lesion_harvest.lpc.pretrain`).

    Parameters
    ----------
    build_network : callable
        ``build_network()`` gives the network (after ``torch.manual_seed(options.seed)``).
    batch_of : callable
        ``batch_of(step)`` gives ``(inputs, targets)`` of ``step``: the inputs a tensor,
        the targets a tensor or a dict of tensors.
    checkpoint_path : path, or callable
        Where checkpoints go (atomically, durably), every ``save_every_s`` seconds
        and at the end; a callable gives the file of each step (one file per
        version: a version is never overwritten).
    header : dict
        ``kind``, ``format_version`` and ``config`` of every checkpoint written; the
        loop adds ``model``, ``optimizer``, ``step``, ``total_steps``, ``seconds`` and
        ``seed``.
    options : LPGTrainOptions or alike
        ``steps``, ``learning_rate``, ``warmup_steps``, ``weight_decay``,
        ``optimizer``, ``grad_clip`` and ``seed`` are read.
    loss : callable, optional
        ``loss(network(inputs), targets)``, a scalar tensor; default: the mean squared
        error (restoration).
    resumed : dict, optional
        A checkpoint to continue (its ``model``, ``optimizer``, ``step``, ``seconds``).
    minutes : float, optional
        Time budget of this run: stop and save once it is spent.
    save_every_s : float
    on_checkpoint : callable, optional
        ``on_checkpoint(path, sha256, size, step, seconds)`` once each checkpoint is
        durable.
    device : str
    progress : callable, optional
        ``progress(step, total_steps, {"loss", "lr"})`` after every step.
    should_stop : callable, optional
        Checked between steps; True saves and returns ``stopped=True``.

    Returns
    -------
    PretrainResult
    """
    import torch

    from napari_lesion_harvest.lpg.train import _make_optimizer
    from napari_lesion_harvest.store import checkpoints

    loss = loss or torch.nn.functional.mse_loss
    torch.manual_seed(options.seed)
    network = build_network()
    optimizer = _make_optimizer(network, options)
    step, seconds = 0, 0.0
    if resumed is not None:
        network.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        step, seconds = int(resumed["step"]), float(resumed["seconds"])
    network.to(device).train()

    started = last_save = time.monotonic()
    deadline = None if minutes is None else started + 60.0 * minutes
    saved_step = step if resumed is not None else None
    path_of = checkpoint_path if callable(checkpoint_path) else lambda _: checkpoint_path

    def save() -> None:
        nonlocal last_save, saved_step
        state = {
            **header,
            "model": {k: v.detach().cpu() for k, v in network.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "step": step,
            "total_steps": options.steps,
            "seconds": elapsed(),
            "seed": options.seed,
        }
        path = Path(path_of(step))
        sha256, size = checkpoints.write_checkpoint(state, path)
        last_save, saved_step = time.monotonic(), step
        if on_checkpoint is not None:
            on_checkpoint(path, sha256, size, step, state["seconds"])

    def elapsed() -> float:
        return seconds + time.monotonic() - started

    losses: list[float] = []
    stopped = False
    while step < options.steps:
        out_of_time = deadline is not None and time.monotonic() >= deadline
        if out_of_time or (should_stop is not None and should_stop()):
            stopped = True
            break
        inputs, targets = batch_of(step)
        learning_rate = learning_rate_at(step, options)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        if isinstance(targets, dict):
            targets = {name: value.to(device) for name, value in targets.items()}
        else:
            targets = targets.to(device)
        value = loss(network(inputs.to(device)), targets)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        if options.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(network.parameters(), options.grad_clip)
        optimizer.step()
        step += 1
        losses.append(float(value.detach()))
        if progress is not None:
            progress(step, options.steps, {"loss": losses[-1], "lr": learning_rate})
        if time.monotonic() - last_save >= save_every_s and step < options.steps:
            save()
    if step != saved_step:
        save()
    return PretrainResult(step, options.steps, elapsed(), losses, stopped)


def read_pretrained(path: str | os.PathLike, *, sha256: str | None) -> dict:
    """A pretraining checkpoint, checked against ``sha256`` and read weights-only.

    Raises
    ------
    ChecksumMismatchError
        The file is not the recorded one; it was not unpickled.
    CheckpointError
        Missing, unreadable, or not a pretraining checkpoint.
    """
    from napari_lesion_harvest.lpg.checkpoint import load_checkpoint

    return load_checkpoint(path, sha256=sha256, kind=CHECKPOINT_KIND, version=CHECKPOINT_VERSION)


def load_pretrained_trunk(model, path: str | os.PathLike, *, sha256: str | None) -> None:
    """Load a pretraining checkpoint's trunk into an LPG (its heads stay as they are).

    ``model.pretrained_note`` then says
    ``self-supervised trunk from <path> (<steps> steps)``.

    Raises
    ------
    ChecksumMismatchError
        The file is not the recorded one.
    CheckpointError
        Not a pretraining checkpoint, or pretrained for an LPG configuration whose
        :data:`FITTING_FIELDS` differ from ``model.config``'s (the message names the
        file, both configurations and the fields).
    """
    from napari_lesion_harvest.lpg.model import HEAD_PREFIXES, load_trunk_state

    state = read_pretrained(path, sha256=sha256)
    theirs = get_config(state["config"]).to_dict()
    ours = model.config.to_dict()
    differ = [name for name in FITTING_FIELDS if theirs[name] != ours[name]]
    if differ:
        shown = ", ".join(f"{name} {theirs[name]} vs {ours[name]}" for name in differ)
        raise CheckpointError(
            f"{path}: pretrained for LPG config {theirs['name']!r}, which does not fit this "
            f"LPG ({ours['name']!r}: {shown}); pretrain for it (lesion-harvest pretrain "
            f"--config) or discard the weights (lesion-harvest pretrain --discard)"
        )
    prefix = "mscn."
    trunk = {
        name[len(prefix) :]: value
        for name, value in state["model"].items()
        if name.startswith(prefix) and not name[len(prefix) :].startswith(HEAD_PREFIXES)
    }
    try:
        load_trunk_state(model, trunk, source=str(path))
    except ValueError as error:
        raise CheckpointError(str(error)) from error
    model.pretrained_note = f"self-supervised trunk from {Path(path)} ({state['step']} steps)"
