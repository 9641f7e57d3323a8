"""Saving and loading LPC checkpoints: the package's one durable writer, weights-only reads.

A checkpoint is a dict of plain Python values and tensors::

    {"format": "lpc-v1", "config": {...}, "state_dict": {...}, "meta": {...}}

so it loads with ``torch.load(..., weights_only=True)``: no code runs from the file.
Files go through :mod:`napari_lesion_harvest.store.checkpoints` (atomic,
fsynced; sha256 checked against the project's record on reading).
"""

from __future__ import annotations

from pathlib import Path

from napari_lesion_harvest.lpc.models import ProposalClassifier
from napari_lesion_harvest.store import checkpoints
from napari_lesion_harvest.store.checkpoints import CheckpointError

CHECKPOINT_FORMAT = "lpc-v1"


def checkpoint_payload(model: ProposalClassifier, *, meta: dict | None = None) -> dict:
    """The checkpoint dict of ``model`` (what :func:`save_checkpoint` writes).

    Parameters
    ----------
    model : ProposalClassifier
    meta : dict, optional
        Plain values (numbers, strings, lists, dicts) kept with the weights:
        epochs, validation loss, training set sizes...
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "config": dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }


def save_checkpoint(model: ProposalClassifier, path, *, meta: dict | None = None) -> Path:
    """Write ``model`` to ``path`` atomically and durably
    (:func:`~napari_lesion_harvest.store.checkpoints.write_checkpoint`).

    Parameters
    ----------
    model : ProposalClassifier
    path : str or Path
    meta : dict, optional
        See :func:`checkpoint_payload`.

    Returns
    -------
    Path
    """
    checkpoints.write_checkpoint(checkpoint_payload(model, meta=meta), path)
    return Path(path)


def load_checkpoint(
    path, *, sha256: str | None = None, device="cpu"
) -> tuple[ProposalClassifier, dict]:
    """Read a checkpoint written by :func:`save_checkpoint` (weights only, no pickled code).

    Parameters
    ----------
    path : str or Path
    sha256 : str, optional
        As in :func:`napari_lesion_harvest.store.checkpoints.load_checkpoint`:
        the digest the project recorded (None for a file outside a project).
    device : str or torch.device, optional

    Returns
    -------
    model : ProposalClassifier
        In eval mode on ``device``.
    meta : dict

    Raises
    ------
    ChecksumMismatchError
        The file differs from the recorded one.
    CheckpointError
        Missing file, unreadable content, another format or mismatched weights.
    """
    from napari_lesion_harvest.lpc.models import build_classifier

    payload = checkpoints.load_checkpoint(path, sha256=sha256, map_location="cpu")
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
