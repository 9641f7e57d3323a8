"""Scoring proposals with a trained LPC: s_c, the lesion score s_gc = s_g * s_c, and V_M scores.

V_M scores choose the harvest threshold. The paper scores V_M with the LPC
trained on those very proposals (``in_sample``), which makes the threshold
optimistic; ``out_of_fold`` trains one LPC per fold of V_M volumes (all V_H
positives always in training) and scores each fold with the model that did not
see it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpc.models import ProposalClassifier
from napari_lesion_harvest.lpc.patches import extract_patches
from napari_lesion_harvest.lpc.train import (
    ProposalSet,
    TrainingOptions,
    predict_logits,
    train_classifier,
)
from napari_lesion_harvest.workers.progress import Progress, check_cancelled, no_progress

#: How V_M proposals can be scored for the threshold.
V_M_SCORE_MODES = ("out_of_fold", "in_sample")


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


def lesion_scores(proposals: Sequence[Proposal3D], s_c) -> np.ndarray:
    """The paper's lesion score s_gc = s_g * s_c (Eq. 2), shape ``(N,)``."""
    s_c = np.asarray(s_c, dtype=np.float64).ravel()
    if s_c.shape[0] != len(proposals):
        raise ValueError(f"{len(proposals)} proposals but {s_c.shape[0]} LPC scores")
    return np.array([p.s_g for p in proposals], dtype=np.float64) * s_c


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


def v_m_scores(
    sets: Sequence[ProposalSet],
    *,
    mode: str = "out_of_fold",
    folds: int = 5,
    options: TrainingOptions | None = None,
    model: ProposalClassifier | None = None,
    device=None,
    progress: Progress = no_progress,
    cancelled: Callable[[], bool] | None = None,
) -> dict[str, np.ndarray]:
    """LPC scores s_c of every V_M proposal, for choosing the harvest threshold.

    Parameters
    ----------
    sets : sequence of ProposalSet
        All verified proposals (V_M and V_H), as for :func:`train_classifier`.
    mode : {"out_of_fold", "in_sample"}
        ``out_of_fold``: train ``folds`` models, each without one fold of V_M
        volumes, and score that fold. ``in_sample`` (the paper): score with
        ``model``, the LPC trained on all of them.
    folds : int
    options : TrainingOptions, optional
        Training settings of the fold models (``seed`` also picks the folds).
    model : ProposalClassifier, optional
        Required for ``in_sample``.
    device, progress, cancelled
        As for :func:`train_classifier`; stages are ``lpc-fold`` and the fold
        model's own.

    Returns
    -------
    dict volume_id -> ndarray, shape (K,)
        s_c of each V_M volume's proposals, in the set's order.
    """
    if mode not in V_M_SCORE_MODES:
        raise ValueError(f"V_M score mode must be one of {V_M_SCORE_MODES}, got {mode!r}")
    options = options or TrainingOptions()
    v_m = [s for s in sets if s.fully_annotated]
    if mode == "in_sample":
        if model is None:
            raise ValueError("in-sample V_M scores need the trained model")
        return {s.volume.volume_id: classify_proposals(model, s.volume, s.proposals) for s in v_m}
    assignment = fold_of_volumes(sets, folds, options.seed)
    scores: dict[str, np.ndarray] = {}
    for fold in range(folds):
        check_cancelled(cancelled)
        progress("lpc-fold", fold, folds, f"fold {fold + 1} of {folds}")
        training = [s for s, f in zip(sets, assignment, strict=True) if f != fold]
        result = train_classifier(
            training,
            replace(options, seed=options.seed + fold),
            device=device,
            progress=progress,
            cancelled=cancelled,
        )
        for s, f in zip(sets, assignment, strict=True):
            if f == fold:
                scores[s.volume.volume_id] = classify_proposals(
                    result.model, s.volume, s.proposals, device=device
                )
    progress("lpc-fold", folds, folds)
    return scores
