"""Scoring proposals with a trained CNN classifier: s_c, the lesion score s_gc = s_g * s_c,
and the folds of V_M volumes for out-of-fold scores.

V_M scores choose the harvest threshold. The paper scores V_M with the LPC
trained on those very proposals (``in_sample``), which makes the threshold
optimistic; out-of-fold scores (:func:`~napari_lesion_harvest.lpc.fitting.out_of_fold`)
come from one model per fold of V_M volumes (all V_H positives always in training),
each scoring the fold it did not see.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpc.models import ProposalClassifier
from napari_lesion_harvest.lpc.patches import extract_patches
from napari_lesion_harvest.lpc.train import ProposalSet, predict_logits


def classify_proposals(
    model: ProposalClassifier,
    volume: CTVolume,
    proposals: Sequence[Proposal3D],
    *,
    batch_size: int = 64,
    device=None,
) -> np.ndarray:
    """LPC probabilities s_c of the proposals of one volume.

    Parameters
    ----------
    model : ProposalClassifier
    volume : CTVolume
    proposals : sequence of Proposal3D
    batch_size : int
        Proposals per patch extraction and forward pass (bounds memory).
    device : str or torch.device, optional
        Default: the model's device.

    Returns
    -------
    ndarray, shape (N,), float64
        s_c in [0, 1], in the order of ``proposals``.
    """
    device = torch.device(device) if device else next(model.parameters()).device
    model = model.to(device)
    out = []
    for start in range(0, len(proposals), batch_size):
        chunk = proposals[start : start + batch_size]
        patches = torch.from_numpy(extract_patches(volume, chunk, model.spec))
        out.append(predict_logits(model, patches, batch_size=batch_size, device=device))
    logits = np.concatenate(out) if out else np.zeros(0)
    return 1.0 / (1.0 + np.exp(-logits))


def lesion_scores(s_g, s_c) -> np.ndarray:
    """The paper's lesion score s_gc = s_g * s_c (Eq. 2).

    Parameters
    ----------
    s_g : array_like, shape (N,)
        The proposals' objectness (highest 2D score of the LPG).
    s_c : array_like, shape (N,)
        Their LPC scores.

    Returns
    -------
    ndarray, shape (N,), float64
    """
    s_g = np.asarray(s_g, dtype=np.float64).ravel()
    s_c = np.asarray(s_c, dtype=np.float64).ravel()
    if s_c.shape != s_g.shape:
        raise ValueError(f"{s_g.shape[0]} objectness scores but {s_c.shape[0]} LPC scores")
    return s_g * s_c


def fold_of_volumes(sets: Sequence[ProposalSet], folds: int, seed: int) -> np.ndarray:
    """Fold number of each set: V_M volumes spread over ``folds`` folds, V_H sets -1.

    Returns
    -------
    ndarray of int, shape (len(sets),)
    """
    v_m = np.flatnonzero([s.fully_annotated for s in sets])
    if folds < 2 or len(v_m) < folds:
        raise ValueError(
            f"out-of-fold scoring needs >= {max(folds, 2)} V_M volumes and folds >= 2"
        )
    assignment = np.full(len(sets), -1)
    shuffled = np.random.default_rng(seed).permutation(v_m)
    assignment[shuffled] = np.arange(len(v_m)) % folds
    return assignment
