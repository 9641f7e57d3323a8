"""Self-supervised pretraining of the LPC's view trunks on unlabelled CT (Models Genesis style).

The ``multiview`` classifier has one ResNet-18 trunk per view (axial, coronal,
sagittal), the ``axial`` one a single trunk. Each trunk learns to restore its view
of a patch from a corrupted copy: its four stages (strides 4 to 32) feed a light
decoder (1x1 lateral convolutions, a top-down path with nearest upsampling, 3x3
conv, ReLU, 1x1 conv to 16 channels, pixel shuffle by 4) that gives the patch
back; the loss is the mean squared error in the classifier's own grey levels
(:func:`~napari_lesion_harvest.lpc.patches.lpc_window`, a 0-255 scale: in [0, 1]
units, as the LPG's, the wide HU window leaves so little contrast that a few
hundred steps learn little more than the mean). The patches are
cut exactly as the round's LPC cuts them (:func:`~napari_lesion_harvest.lpc.patches.
extract_patches` with the classifier's :class:`~napari_lesion_harvest.lpc.patches.
PatchSpec`: views, size, context ``pad_px``, HU window, ``outside``) around a random
point of a random slice (:class:`~napari_lesion_harvest.lpg.pretrain.PretrainSlices`)
with a random lesion-like extent (a diameter log-uniform in ``lesion_mm``); each
view is corrupted on its own with :func:`~napari_lesion_harvest.lpg.corruption.corrupt`.
No label of any kind is read.

The ``3d`` variant (r3d-18 on a cube), the ``features`` model and ``s_g`` have no
2D trunk: nothing is pretrained for them (:func:`no_trunk_reason`).

Only the trunks are kept for training the LPC (:func:`load_pretrained_trunks`); the
decoders are discarded.

Checkpoint (written by the package's durable writer, read weights-only)::

    {"kind": "lpc-pretrain", "format_version": 1, "config": classifier config
     (``ProposalClassifier.config``), "model": state_dict (``trunks.*`` and
     ``decoders.*``), "optimizer": state_dict, "step": int, "total_steps": int,
     "seconds": float, "seed": int}

Every random draw of step ``s`` comes from ``numpy.random.default_rng([seed, s, k])``
(``k`` = position in the batch), so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.lpc.patches import extract_patches
from napari_lesion_harvest.lpg.config import CONFIGS
from napari_lesion_harvest.lpg.corruption import corrupt, from_unit, to_unit
from napari_lesion_harvest.lpg.pretrain import (
    PretrainResult,
    PretrainSlices,
    train_pretext,
)
from napari_lesion_harvest.store.checkpoints import CheckpointError

CHECKPOINT_KIND = "lpc-pretrain"
CHECKPOINT_VERSION = 1
#: The classifier variants with 2D ResNet-18 trunks to pretrain.
TRUNK_VARIANTS = ("multiview", "axial")
#: Classifier configuration fields the pretrained trunks must share with the LPC that
#: loads them: the architecture and what its patches show.
FITTING_FIELDS = ("variant", "width", "patch_size", "pad_px", "hu_window", "outside")
#: The LPC's patch intensities are the paper LPG's (``lpc_window``: its mean and scale).
_INTENSITIES = CONFIGS["paper"]
#: Upsampling of the decoder's stride-4 map to the patch (pixel shuffle).
_DECODER_STRIDE = 4


@dataclass(frozen=True)
class LPCPretrainOptions:
    """Optimisation of the LPC's restoration pretraining.

    Attributes
    ----------
    steps : int
        Planned steps in all (also of a resumed run).
    batch_size : int
        Patches per step.
    learning_rate : float
        Peak rate: linear warm-up over ``warmup_steps``, then cosine decay to 0.
    warmup_steps : int
    weight_decay : float
    optimizer : {"adamw", "sgd"}
    grad_clip : float
        Gradient norm clip (0: none).
    seed : int
    lesion_mm : (float, float)
        Range of the random extents' diameters in mm (drawn log-uniformly).
    """

    steps: int = 2000
    batch_size: int = 8
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    grad_clip: float = 10.0
    seed: int = 0
    lesion_mm: tuple[float, float] = (5.0, 40.0)


DEFAULT_OPTIONS = LPCPretrainOptions()


def no_trunk_reason(variant: str) -> str | None:
    """Why a classifier ``variant`` has no trunk to pretrain, or None when it has 2D
    trunks (:data:`TRUNK_VARIANTS`)."""
    if variant in TRUNK_VARIANTS:
        return None
    return {
        "3d": "the 3d LPC (r3d-18 on a cube) has no 2D trunk",
        "features": "the features LPC (logistic regression on proposal features) has no trunk",
        "s_g": "the s_g LPC (objectness alone) has no classifier",
    }.get(variant, f"LPC variant {variant!r} has no 2D trunk")


def _stage_features(trunk, images):
    """The four stages' maps of a torchvision ResNet trunk on ``(N, 1, S, S)`` images."""
    x = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(images))))
    maps = []
    for stage in (trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4):
        x = stage(x)
        maps.append(x)
    return maps


def restoration_network(config: dict):
    """The classifier's view trunks, each with a light restoration decoder.

    Parameters
    ----------
    config : dict
        A classifier configuration (:func:`~napari_lesion_harvest.lpc.models.
        classifier_config`) of a variant in :data:`TRUNK_VARIANTS`.

    Returns
    -------
    torch.nn.Module
        ``forward(patches)`` maps ``(B, V, S, S)`` windowed patches to their restored
        views ``(B, V, S, S)``, in the same intensities. Attribute ``trunks`` holds the
        trunks exactly as :class:`~napari_lesion_harvest.lpc.models.ProposalClassifier`
        does.
    """
    import torch.nn.functional as F
    from torch import nn

    from napari_lesion_harvest.lpc.models import WIDTHS, patch_spec_for, resnet18_trunk

    reason = no_trunk_reason(config["variant"])
    if reason:
        raise ValueError(f"{reason}: nothing to pretrain")
    spec = patch_spec_for(config)
    base = WIDTHS[config["width"]]
    channels = 2 * base

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.laterals = nn.ModuleList(nn.Conv2d(base * 2**i, channels, 1) for i in range(4))
            self.head = nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(channels, _DECODER_STRIDE**2, 1),
                nn.PixelShuffle(_DECODER_STRIDE),
            )

        def forward(self, maps, size):
            x = self.laterals[3](maps[3])
            for level in (2, 1, 0):
                x = F.interpolate(x, size=maps[level].shape[-2:], mode="nearest")
                x = x + self.laterals[level](maps[level])
            out = self.head(x)
            if out.shape[-2:] != size:
                out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
            return out

    class RestorationNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            views = len(spec.views)
            self.trunks = nn.ModuleList(
                resnet18_trunk(width=config["width"], pretrained=False)[0] for _ in range(views)
            )
            self.decoders = nn.ModuleList(Decoder() for _ in range(views))

        def forward(self, patches):
            import torch

            size = tuple(patches.shape[-2:])
            restored = [
                decoder(_stage_features(trunk, patches[:, v : v + 1]), size)
                for v, (trunk, decoder) in enumerate(zip(self.trunks, self.decoders, strict=True))
            ]
            return torch.cat(restored, dim=1)

    return RestorationNetwork()


def random_proposal(
    slices: PretrainSlices, rng: np.random.Generator, lesion_mm: tuple[float, float]
):
    """A lesion-like box around a random point: its volume and a one-box-per-slice
    :class:`~napari_lesion_harvest.geometry.Proposal3D`.

    The point is a uniform one of a slice drawn by ``slices``; the extent is a cube of
    diameter log-uniform in ``lesion_mm`` (in mm), clipped to the volume along z.
    """
    volume, z = slices.draw(rng)
    depth, height, width = volume.shape
    y, x = rng.uniform(0, height - 1), rng.uniform(0, width - 1)
    radius_mm = float(np.exp(rng.uniform(*np.log(lesion_mm)))) / 2
    sz, sy, sx = (float(v) for v in volume.spacing)
    z1 = int(np.clip(round(z - radius_mm / sz), 0, depth - 1))
    z2 = int(np.clip(round(z + radius_mm / sz), 0, depth - 1))
    box = [x - radius_mm / sx, y - radius_mm / sy, x + radius_mm / sx, y + radius_mm / sy]
    count = z2 - z1 + 1
    proposal = Proposal3D(np.arange(z1, z2 + 1), np.tile(box, (count, 1)), np.ones(count))
    return volume, proposal


def restoration_batch(
    slices: PretrainSlices, config: dict, options: LPCPretrainOptions, step: int
):
    """The corrupted patches and restoration targets of ``step``.

    Returns
    -------
    inputs : Tensor, shape (B, V, S, S)
        Corrupted patches in the classifier's intensities (``lpc_window``); each view
        is corrupted on its own, in [0, 1] units
        (:func:`~napari_lesion_harvest.lpg.corruption.to_unit`).
    targets : Tensor, shape (B, V, S, S)
        The clean patches, in the same intensities.
    """
    import torch

    from napari_lesion_harvest.lpc.models import patch_spec_for

    spec = patch_spec_for(config)
    inputs, targets = [], []
    for k in range(options.batch_size):
        rng = np.random.default_rng([options.seed, step, k])
        volume, proposal = random_proposal(slices, rng, options.lesion_mm)
        clean = extract_patches(volume, [proposal], spec)[0]
        unit = to_unit(clean, _INTENSITIES)
        corrupted = np.concatenate([corrupt(view[None], rng) for view in unit])
        inputs.append(from_unit(corrupted, _INTENSITIES))
        targets.append(clean)
    return torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(targets))


def pretrain_trunks(
    slices: PretrainSlices,
    checkpoint_path: str | os.PathLike | Callable[[int], Path],
    *,
    config: dict,
    options: LPCPretrainOptions = DEFAULT_OPTIONS,
    resume_from: tuple[str | os.PathLike, str | None] | None = None,
    **loop,
) -> PretrainResult:
    """Pretrain (or continue pretraining) the LPC's view trunks by restoration.

    Parameters
    ----------
    slices : PretrainSlices
        The volumes to learn from (never evaluation volumes).
    checkpoint_path : path, or callable
        As for :func:`~napari_lesion_harvest.lpg.pretrain.train_pretext`.
    config : dict
        Classifier configuration of a new run; a resumed run keeps the checkpoint's.
    options : LPCPretrainOptions
    resume_from : (path, sha256), optional
        Continue from this checkpoint; with a recorded sha256, other content is refused.
    **loop
        ``minutes``, ``save_every_s``, ``on_checkpoint``, ``device``, ``progress``,
        ``should_stop``: as for :func:`~napari_lesion_harvest.lpg.pretrain.train_pretext`.

    Returns
    -------
    PretrainResult

    Raises
    ------
    ValueError
        ``config``'s variant has no 2D trunk (:func:`no_trunk_reason`).
    """
    resumed = None
    if resume_from is not None:
        resumed = read_pretrained(resume_from[0], sha256=resume_from[1])
        config = resumed["config"]
    config = dict(config)
    return train_pretext(
        lambda: restoration_network(config),
        lambda step: restoration_batch(slices, config, options, step),
        checkpoint_path,
        header={"kind": CHECKPOINT_KIND, "format_version": CHECKPOINT_VERSION, "config": config},
        options=options,
        resumed=resumed,
        **loop,
    )


def read_pretrained(path: str | os.PathLike, *, sha256: str | None) -> dict:
    """An LPC pretraining checkpoint, checked against ``sha256`` and read weights-only.

    Raises
    ------
    ChecksumMismatchError
        The file is not the recorded one; it was not unpickled.
    CheckpointError
        Missing, unreadable, or not an LPC pretraining checkpoint.
    """
    from napari_lesion_harvest.lpg.checkpoint import load_checkpoint

    return load_checkpoint(path, sha256=sha256, kind=CHECKPOINT_KIND, version=CHECKPOINT_VERSION)


def trunk_misfit(pretrained: dict, classifier: dict) -> str | None:
    """Why trunks pretrained for classifier configuration ``pretrained`` do not fit a
    classifier of configuration ``classifier`` (None: they fit), said of the classifier
    (``it has no 2D trunk``, ``its patch_size 48 is not the pretrained 32``).

    Both are :attr:`~napari_lesion_harvest.lpc.models.ProposalClassifier.config` dicts.
    """
    if no_trunk_reason(classifier["variant"]):
        return "it has no 2D trunk"
    differ = [name for name in FITTING_FIELDS if pretrained.get(name) != classifier.get(name)]
    if not differ:
        return None
    return "its " + ", ".join(
        f"{name} {classifier.get(name)} is not the pretrained {pretrained.get(name)}"
        for name in differ
    )


def load_pretrained_trunks(model, path: str | os.PathLike, *, sha256: str | None) -> None:
    """Load a pretraining checkpoint's trunks into a classifier (its ``fc`` stays as it is).

    ``model.pretrained_source`` then says
    ``self-supervised trunks from <path> (<steps> steps)``.

    Raises
    ------
    ChecksumMismatchError
        The file is not the recorded one.
    CheckpointError
        Not an LPC pretraining checkpoint, or pretrained for a classifier that
        ``model`` does not fit (:func:`trunk_misfit`; the message names the file).
    """
    state = read_pretrained(path, sha256=sha256)
    misfit = trunk_misfit(state["config"], model.config)
    if misfit:
        raise CheckpointError(f"{path}: pretrained LPC trunks that do not fit this LPC: {misfit}")
    prefix = "trunks."
    trunks = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    try:
        model.trunks.load_state_dict(trunks)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: pretrained LPC trunks do not load: {error}") from error
    model.pretrained_source = f"self-supervised trunks from {Path(path)} ({state['step']} steps)"
