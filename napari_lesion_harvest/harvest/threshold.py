"""The harvest threshold (the lowest lesion score that keeps precision on V_M), and how
many false positives V_M's non-lesions let one expect above it in the harvest."""

from __future__ import annotations

import numpy as np

from napari_lesion_harvest.tracking.marks import proposals_hitting_marks
from napari_lesion_harvest.vocabulary import Role

#: Precision on the fully annotated V_M that the harvest threshold must reach (paper, Sec. III-D).
HARVEST_PRECISION = 0.95
#: Which of V_M's lesion proposals the threshold counts (``harvest.threshold_lesions``):
#: every one (the paper), or only those that hit no original mark.
THRESHOLD_LESIONS = ("all", "unmarked")


def threshold_sample(v_m, original_marks, *, lesions: str = "all", match_iou: float = 0.5):
    """The V_M proposals whose scores set the threshold, as ``(s_gc, is_lesion)`` lists.

    With ``lesions="unmarked"``, the lesion proposals (``P_RM``) that hit an original
    mark of their volume are left out. A V_H volume's proposals that hit an original
    mark are ``P_RH`` and never harvested, so what the threshold cuts there is its
    unmarked lesions and its non-lesions; V_M without its originally marked lesions is
    that population (originally marked lesions tend to be the conspicuous ones).

    Parameters
    ----------
    v_m : sequence of StoredProposal
        V_M's proposals with their role (``P_RM`` or ``P_neg_M``) and ``s_gc``.
    original_marks : mapping of str to list of RecistMark
        The original marks of each V_M volume (used with ``lesions="unmarked"``).
    lesions : {"all", "unmarked"}
    match_iou : float
        2D IoU a proposal needs with a mark to hit it.

    Returns
    -------
    scores : list of float
    is_lesion : list of bool
    """
    if lesions not in THRESHOLD_LESIONS:
        raise ValueError(f"lesions must be one of {THRESHOLD_LESIONS}, got {lesions!r}")
    marked = set()
    if lesions == "unmarked":
        by_volume: dict = {}
        for stored in v_m:
            if stored.role == Role.P_RM:
                by_volume.setdefault(stored.volume_id, []).append(stored)
        hits = proposals_hitting_marks(
            {v: [s.proposal for s in chosen] for v, chosen in by_volume.items()},
            original_marks,
            iou_threshold=match_iou,
        )
        for volume_id, chosen in by_volume.items():
            marked.update(s.id for s, hit in zip(chosen, hits[volume_id], strict=True) if hit)
    kept = [s for s in v_m if s.id not in marked]
    return [s.s_gc for s in kept], [s.role == Role.P_RM for s in kept]


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


def expected_false_positives(v_m_scores, v_m_is_lesion, scored, threshold: float) -> float:
    """How many of the proposals harvested at ``threshold`` one should expect not to be lesions.

    V_M's non-lesion proposals calibrate the harvest (the conformal estimate of
    Jin and Candes, "Selection by prediction with conformal p-values", JMLR 2023):
    when a scored proposal that is no lesion is drawn like V_M's non-lesions, it
    reaches the threshold with probability of about ``(k + 1) / (n + 1)``, where
    ``n`` counts V_M's non-lesions and ``k`` those at or above the threshold. Where
    :func:`threshold_at_precision` puts the threshold just above V_M's highest
    non-lesion (``k = 0``), ``1 / (n + 1)`` is exactly the chance that a new
    non-lesion scores above all ``n``. Every scored proposal is counted as
    a possible non-lesion (nearly all are), and the estimate never exceeds the
    harvest's size. So with ``n`` non-lesions in V_M and ``N`` proposals scored,
    a harvest holds about ``N / (n + 1)`` false positives however high V_M puts
    the threshold: only more fully marked volumes make V_M vouch for fewer.

    Parameters
    ----------
    v_m_scores : array_like, shape (N_M,)
        Lesion scores ``s_gc`` of the proposals in V_M.
    v_m_is_lesion : array_like of bool, shape (N_M,)
        True for ``P_RM``, False for ``P_neg_M``.
    scored : array_like, shape (N,)
        Lesion scores ``s_gc`` of every proposal the round scored for the harvest.
    threshold : float
        The harvest threshold (``inf``: nothing harvested).

    Returns
    -------
    float
        Expected false positives among ``scored >= threshold``; 0 when nothing is
        harvested, ``nan`` when V_M has no non-lesion proposal to calibrate with.
    """
    v_m_scores = np.asarray(v_m_scores, dtype=np.float64).ravel()
    v_m_is_lesion = np.asarray(v_m_is_lesion, dtype=bool).ravel()
    if v_m_scores.shape != v_m_is_lesion.shape:
        raise ValueError(f"{v_m_scores.size} V_M scores but {v_m_is_lesion.size} labels")
    scored = np.asarray(scored, dtype=np.float64).ravel()
    harvested = int((scored >= threshold).sum())
    if harvested == 0:
        return 0.0
    non_lesions = v_m_scores[~v_m_is_lesion]
    if non_lesions.size == 0:
        return float("nan")
    above = int((non_lesions >= threshold).sum())
    return min(float(harvested), scored.size * (above + 1) / (non_lesions.size + 1))
