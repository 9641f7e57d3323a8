"""LPG checkpoints: written atomically, read only with ``torch.load(weights_only=True)``.

A checkpoint is a dict of plain values and tensors::

    {"kind": "lpg-mscn", "format_version": 1, "config": LPGConfig.to_dict(),
     "model": state_dict, "step": int, "total_steps": int,
     "optimizer": state_dict or None, "pretrained_note": str}
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from napari_lesion_harvest.lpg.config import LPGConfig
from napari_lesion_harvest.lpg.model import MultiSliceCenterNet

CHECKPOINT_KIND = "lpg-mscn"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable LPG checkpoint."""


def save_checkpoint(
    path: str | os.PathLike,
    model: MultiSliceCenterNet,
    *,
    step: int = 0,
    total_steps: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file in the same folder + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, *, map_location="cpu") -> dict:
    """Read a checkpoint dict safely (``weights_only=True``).

    Raises
    ------
    CheckpointError
        When the file is missing, unreadable or not an LPG checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such LPG checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"{path}: not a readable LPG checkpoint ({error})") from error
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path}: not an LPG checkpoint (kind != {CHECKPOINT_KIND!r})")
    if state.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {state.get('format_version')} is not supported "
            f"(expected {CHECKPOINT_VERSION})"
        )
    return state


def model_from_checkpoint(state: dict) -> MultiSliceCenterNet:
    """Build the model a checkpoint dict describes and load its weights."""
    model = MultiSliceCenterNet(LPGConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    model.pretrained_note = state.get("pretrained_note", "")
    return model


def load_model(path: str | os.PathLike, *, map_location="cpu") -> MultiSliceCenterNet:
    """The model stored in checkpoint ``path`` (config from the file), in eval mode."""
    return model_from_checkpoint(load_checkpoint(path, map_location=map_location)).eval()
