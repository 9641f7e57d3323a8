"""Saving and loading LPC checkpoints: the package's one durable writer, weights-only reads.

A checkpoint is a dict of plain Python values and tensors. A CNN classifier::

    {"format": "lpc-v1", "config": {...}, "state_dict": {...}, "meta": {...}}

the feature model (:mod:`~napari_lesion_harvest.lpc.feature_model`)::

    {"format": "lpc-features-v1", "config": {"variant": "features", "feature_names": [...]},
     "state_dict": {"mean": [...], "scale": [...], "coef": [...], "intercept": x}, "meta": {...}}

so it loads with ``torch.load(..., weights_only=True)``: no code runs from the file.
Files go through :mod:`napari_lesion_harvest.store.checkpoints` (atomic,
fsynced; sha256 checked against the project's record on reading).
"""

from __future__ import annotations

from pathlib import Path

from napari_lesion_harvest.lpc.feature_model import FeatureClassifier
from napari_lesion_harvest.lpc.models import ProposalClassifier
from napari_lesion_harvest.store import checkpoints
from napari_lesion_harvest.store.checkpoints import CheckpointError

CHECKPOINT_FORMAT = "lpc-v1"
FEATURES_FORMAT = "lpc-features-v1"


def checkpoint_payload(model, *, meta: dict | None = None) -> dict:
    """The checkpoint dict of ``model`` (what :func:`save_checkpoint` writes).

    Parameters
    ----------
    model : ProposalClassifier or FeatureClassifier
    meta : dict, optional
        Plain values (numbers, strings, lists, dicts) kept with the weights:
        epochs, validation loss, training set sizes...
    """
    if isinstance(model, FeatureClassifier):
        return {
            "format": FEATURES_FORMAT,
            "config": {"variant": "features", "feature_names": list(model.feature_names)},
            "state_dict": {
                "mean": [float(v) for v in model.mean],
                "scale": [float(v) for v in model.scale],
                "coef": [float(v) for v in model.coef],
                "intercept": float(model.intercept),
            },
            "meta": dict(meta or {}),
        }
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
    """Read a CNN classifier checkpoint written by :func:`save_checkpoint` (weights
    only, no pickled code).

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
    payload = checkpoints.load_checkpoint(path, sha256=sha256, map_location="cpu")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"LPC checkpoint {path} is not an {CHECKPOINT_FORMAT} file")
    return _classifier(payload, path).to(device).eval(), dict(payload.get("meta", {}))


def load_any_classifier(path, *, sha256: str | None = None, device="cpu"):
    """Read a checkpoint of either format: a CNN classifier or the feature model.

    Returns
    -------
    model : ProposalClassifier (eval mode on ``device``) or FeatureClassifier
    meta : dict

    Raises
    ------
    ChecksumMismatchError, CheckpointError
        As :func:`load_checkpoint`.
    """
    payload = checkpoints.load_checkpoint(path, sha256=sha256, map_location="cpu")
    kind = payload.get("format") if isinstance(payload, dict) else None
    if kind == CHECKPOINT_FORMAT:
        model = _classifier(payload, path).to(device).eval()
    elif kind == FEATURES_FORMAT:
        model = _feature_classifier(payload, path)
    else:
        raise CheckpointError(
            f"LPC checkpoint {path} is neither an {CHECKPOINT_FORMAT} nor an "
            f"{FEATURES_FORMAT} file"
        )
    return model, dict(payload.get("meta", {}))


def _classifier(payload: dict, path) -> ProposalClassifier:
    from napari_lesion_harvest.lpc.models import build_classifier

    config = payload.get("config", {})
    try:
        model = build_classifier(
            config["variant"],
            width=config["width"],
            patch_size=config["patch_size"],
            pad_px=config["pad_px"],
            hu_window=config.get("hu_window"),  # absent before the field: the paper's
            outside=config.get("outside", "air"),  # likewise
            pretrained=False,
        )
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"LPC checkpoint {path}: bad config or weights: {exc}") from exc
    return model


def _feature_classifier(payload: dict, path) -> FeatureClassifier:
    import numpy as np

    from napari_lesion_harvest.lpc.features import FEATURE_NAMES

    try:
        names = tuple(payload["config"]["feature_names"])
        state = payload["state_dict"]
        arrays = [np.asarray(state[k], dtype=np.float64) for k in ("mean", "scale", "coef")]
        intercept = float(state["intercept"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"LPC checkpoint {path}: bad feature model: {exc}") from exc
    if names != FEATURE_NAMES or any(a.shape != (len(names),) for a in arrays):
        raise CheckpointError(
            f"LPC checkpoint {path}: its features {list(names)} are not this version's "
            f"{list(FEATURE_NAMES)}"
        )
    return FeatureClassifier(*arrays, intercept)
