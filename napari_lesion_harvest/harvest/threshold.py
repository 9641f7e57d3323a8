"""Choosing the harvest threshold: the lowest lesion score that keeps precision on V_M."""

from __future__ import annotations

import numpy as np

#: Precision on the fully annotated V_M that the harvest threshold must reach (paper, Sec. III-D).
HARVEST_PRECISION = 0.95


def threshold_at_precision(scores, is_lesion, *, target_precision: float = HARVEST_PRECISION):
    """The lowest score threshold whose selection reaches ``target_precision``.

    Proposals with ``score >= threshold`` are taken as lesions. Candidate
    thresholds are the distinct scores; the lowest one whose selection has
    precision ``>= target_precision`` is returned, so the harvest is as large
    as the precision requirement allows.

    Parameters
    ----------
    scores : array_like, shape (N,)
        Lesion scores ``s_gc`` of the proposals in V_M.
    is_lesion : array_like of bool, shape (N,)
        True for ``P_RM`` (matches a mark), False for ``P_neg_M``.
    target_precision : float
        Required precision in (0, 1].

    Returns
    -------
    threshold : float
        ``inf`` when no threshold reaches the precision (harvest nothing).
    precision : float
        Precision of the selection at that threshold (``nan`` when none).
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    is_lesion = np.asarray(is_lesion, dtype=bool).ravel()
    if scores.shape != is_lesion.shape:
        raise ValueError(f"{scores.size} scores but {is_lesion.size} labels")
    if not 0 < target_precision <= 1:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    if scores.size == 0:
        return float("inf"), float("nan")
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    true_positives = np.cumsum(is_lesion[order])
    # Only cut after the last of a run of tied scores: ties are selected together.
    last_of_tie = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    selected = np.arange(1, scores.size + 1)
    precision = true_positives / selected
    ok = np.flatnonzero(last_of_tie & (precision >= target_precision))
    if ok.size == 0:
        return float("inf"), float("nan")
    cut = ok[-1]
    return float(sorted_scores[cut]), float(precision[cut])
