"""Saving and loading LPC checkpoints: atomic writes, restricted (weights-only) reads.

A checkpoint is a dict of plain Python values and tensors::

    {"format": "lpc-v1", "config": {...}, "state_dict": {...}, "meta": {...}}

so it loads with ``torch.load(..., weights_only=True)``: no code runs from the file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from napari_lesion_harvest.lpc.models import ProposalClassifier

CHECKPOINT_FORMAT = "lpc-v1"


class CheckpointError(ValueError):
    """An LPC checkpoint file that cannot be read; the message names the file."""


def save_checkpoint(model: ProposalClassifier, path, *, meta: dict | None = None) -> Path:
    """Write ``model`` to ``path`` atomically (temporary file in the same folder, then rename).

    Parameters
    ----------
    model : ProposalClassifier
    path : str or Path
    meta : dict, optional
        Plain values (numbers, strings, lists, dicts) kept with the weights:
        epochs, validation loss, training set sizes...

    Returns
    -------
    Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": dict(model.config),
        "state_dict": state,
        "meta": dict(meta or {}),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path, *, device="cpu") -> tuple[ProposalClassifier, dict]:
    """Read a checkpoint written by :func:`save_checkpoint` (weights only, no pickled code).

    Returns
    -------
    model : ProposalClassifier
        In eval mode on ``device``.
    meta : dict

    Raises
    ------
    CheckpointError
        Missing file, unreadable content, another format or mismatched weights.
    """
    from napari_lesion_harvest.lpc.models import build_classifier

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"LPC checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"LPC checkpoint {path} cannot be read: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"LPC checkpoint {path} is not an {CHECKPOINT_FORMAT} file")
    config = payload.get("config", {})
    try:
        model = build_classifier(
            config["variant"],
            width=config["width"],
            patch_size=config["patch_size"],
            pad_px=config["pad_px"],
            hu_window=config.get("hu_window"),  # absent before the field: the paper's
            pretrained=False,
        )
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"LPC checkpoint {path}: bad config or weights: {exc}") from exc
    return model.to(device).eval(), dict(payload.get("meta", {}))
