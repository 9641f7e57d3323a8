"""LPG checkpoints: written by the package's one durable writer, read weights-only.

A checkpoint is a dict of plain values and tensors::

    {"kind": "lpg-mscn", "format_version": 1, "config": LPGConfig.to_dict(),
     "model": state_dict, "step": int, "total_steps": int,
     "optimizer": state_dict or None, "pretrained_note": str}

Files go through :mod:`napari_lesion_harvest.store.checkpoints` (atomic,
fsynced; sha256 checked against the project's record on reading).
"""

from __future__ import annotations

import os

import torch

from napari_lesion_harvest.lpg.config import LPGConfig
from napari_lesion_harvest.lpg.model import MultiSliceCenterNet
from napari_lesion_harvest.store import checkpoints
from napari_lesion_harvest.store.checkpoints import CheckpointError

CHECKPOINT_KIND = "lpg-mscn"
CHECKPOINT_VERSION = 1


def save_checkpoint(
    path: str | os.PathLike,
    model: MultiSliceCenterNet,
    *,
    step: int = 0,
    total_steps: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[str, int]:
    """Write a checkpoint atomically and durably
    (:func:`~napari_lesion_harvest.store.checkpoints.write_checkpoint`).

    Returns
    -------
    sha256 : str
    size : int
        Of the file written.
    """
    state = {
        "kind": CHECKPOINT_KIND,
        "format_version": CHECKPOINT_VERSION,
        "config": model.config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": int(step),
        "total_steps": int(total_steps),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "pretrained_note": model.pretrained_note,
    }
    return checkpoints.write_checkpoint(state, path)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    sha256: str | None = None,
    map_location="cpu",
    kind: str = CHECKPOINT_KIND,
    version: int = CHECKPOINT_VERSION,
) -> dict:
    """Read a checkpoint dict safely (``weights_only=True``).

    Parameters
    ----------
    path : str or PathLike
    sha256 : str, optional
        As in :func:`napari_lesion_harvest.store.checkpoints.load_checkpoint`:
        the digest the project recorded (None for a file outside a project).
    map_location : str or torch.device, optional
    kind, version : str, int
        The ``kind`` and ``format_version`` the file must hold (an LPG checkpoint's by
        default; :mod:`~napari_lesion_harvest.lpg.pretrain` and
        :mod:`~napari_lesion_harvest.lpc.pretrain` read their own).

    Raises
    ------
    ChecksumMismatchError
        The file differs from the recorded one.
    CheckpointError
        When the file is missing, unreadable or not an LPG checkpoint.
    """
    state = checkpoints.load_checkpoint(path, sha256=sha256, map_location=map_location)
    if not isinstance(state, dict) or state.get("kind") != kind:
        what = "an LPG checkpoint" if kind == CHECKPOINT_KIND else f"a {kind} checkpoint"
        raise CheckpointError(f"{path}: not {what} (kind != {kind!r})")
    if state.get("format_version") != version:
        raise CheckpointError(
            f"{path}: checkpoint format {state.get('format_version')} is not supported "
            f"(expected {version})"
        )
    return state


def model_from_checkpoint(state: dict) -> MultiSliceCenterNet:
    """Build the model a checkpoint dict describes and load its weights."""
    model = MultiSliceCenterNet(LPGConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    model.pretrained_note = state.get("pretrained_note", "")
    return model


def load_model(
    path: str | os.PathLike, *, sha256: str | None = None, map_location="cpu"
) -> MultiSliceCenterNet:
    """The model stored in checkpoint ``path`` (config from the file), in eval mode
    (``sha256`` as in :func:`load_checkpoint`)."""
    state = load_checkpoint(path, sha256=sha256, map_location=map_location)
    return model_from_checkpoint(state).eval()
