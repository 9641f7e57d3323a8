"""Proposal-level classification metrics: ROC AUC, precision-recall points and AP.

Each proposal is one sample with a binary label (lesion or not), unlike the
lesion-level detection curves of :mod:`napari_lesion_harvest.evaluation`.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    return scores, labels


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half).

    Parameters
    ----------
    scores : array_like, shape (N,)
    labels : array_like of bool or {0, 1}, shape (N,)

    Returns
    -------
    float
        ``nan`` when one class is absent.
    """
    scores, labels = _scores_labels(scores, labels)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_recall(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score threshold, highest first.

    Returns
    -------
    precision, recall, thresholds : ndarray, shape (T,)
        Selecting ``score >= thresholds[t]`` gives ``precision[t]`` and ``recall[t]``.
    """
    scores, labels = _scores_labels(scores, labels)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    true_pos = np.cumsum(labels[order])
    last_of_tie = np.r_[sorted_scores[1:] != sorted_scores[:-1], True] if scores.size else []
    points = np.flatnonzero(last_of_tie)
    precision = true_pos[points] / (points + 1.0)
    recall = true_pos[points] / max(int(labels.sum()), 1)
    return precision, recall, sorted_scores[points]


def average_precision(scores, labels) -> float:
    """Area under the proposal-level precision-recall steps: sum of ``precision * d recall``
    over the distinct thresholds, highest first (tied scores are selected together).

    Returns
    -------
    float
        ``nan`` when there is no positive.
    """
    precision, recall, _ = precision_recall(scores, labels)
    if not int(np.asarray(labels).astype(bool).sum()):
        return float("nan")
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
