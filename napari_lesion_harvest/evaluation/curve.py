"""Counting hits over a descending score threshold: the curve FROC, AP and PR read from.

Semantics of the released lesion-harvesting evaluation (Cai et al.), which
this module reproduces:

* detections are taken in order of decreasing confidence;
* a lesion counts as found (a true positive) once, at the first detection
  that hits it;
* FROC false positives: detections that hit no lesion. A detection that only
  hits already-found lesions is neither a TP nor a FP for FROC;
* AP (VOC) false positives: detections that hit no lesion, plus one for every
  hit on a lesion that an earlier detection already found (a detection that
  hits two found lesions adds two);
* every volume of the test set counts in the FP rate, with or without
  detections.

The released code sorts with ``np.argsort(scores)[::-1]``, so equal scores
come out in an order that depends on numpy's sorting. Here equal scores are
taken in reverse input order (what a stable argsort reversed gives) and, by
default, the curve keeps one operating point per distinct score: a threshold
cannot separate equal scores, so the totals after the whole group are the
only real operating point, and they do not depend on the order inside the
group. With all scores distinct the two are identical to the released code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.evaluation.matching import Matches


@dataclass(frozen=True)
class DetectionCurve:
    """Counts at each operating point, from the highest threshold down.

    Attributes
    ----------
    thresholds : ndarray, shape (T,)
        Score threshold of each operating point (detections with
        ``score >= threshold`` are selected), decreasing.
    n_selected : ndarray of int64, shape (T,)
        Detections selected.
    true_positives : ndarray of int64, shape (T,)
        Lesions hit by at least one selected detection.
    false_positives : ndarray of int64, shape (T,)
        Selected detections that hit no lesion (FROC).
    voc_false_positives : ndarray of int64, shape (T,)
        ``false_positives`` plus repeated hits on already-found lesions (AP, PR).
    n_lesions : int
    n_images : int
    """

    thresholds: np.ndarray
    n_selected: np.ndarray
    true_positives: np.ndarray
    false_positives: np.ndarray
    voc_false_positives: np.ndarray
    n_lesions: int
    n_images: int

    @property
    def recall(self) -> np.ndarray:
        """Sensitivity ``TP / n_lesions`` per point, shape ``(T,)``; nan without lesions."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.true_positives / np.float64(self.n_lesions)

    @property
    def fp_per_image(self) -> np.ndarray:
        """FROC false positives per volume (per image for the 2D rule), shape ``(T,)``."""
        return self.false_positives / np.float64(self.n_images)

    @property
    def precision(self) -> np.ndarray:
        """``TP / (TP + VOC FP)`` per operating point, shape ``(T,)``."""
        found = self.true_positives.astype(np.float64)
        return found / np.maximum(found + self.voc_false_positives, np.finfo(np.float64).eps)


@dataclass(frozen=True)
class RankedSteps:
    """What each detection adds to the curve, detections in curve order.

    Attributes
    ----------
    order : ndarray of int64, shape (D,)
        Detection indices by decreasing score, equal scores in reverse input order.
    scores : ndarray, shape (D,)
        Their scores (non-increasing).
    found : ndarray of int64, shape (D,)
        Lesions that each detection is the first to hit.
    misses : ndarray of int64, shape (D,)
        1 for a detection that hits no lesion (a FROC false positive).
    repeat_hits : ndarray of int64, shape (D,)
        Hits on lesions found earlier (false positives for AP and PR).
    """

    order: np.ndarray
    scores: np.ndarray
    found: np.ndarray
    misses: np.ndarray
    repeat_hits: np.ndarray

    def last_of_each_score(self) -> np.ndarray:
        """Positions (into the curve order) of the last detection of each distinct score:
        the operating points a threshold can reach."""
        if len(self.scores) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(np.r_[self.scores[1:] != self.scores[:-1], True])


def ranked_steps(matches: Matches) -> RankedSteps:
    """Order the detections of ``matches`` as the curve takes them, and count what each adds.

    A lesion is found by the first detection (in this order) that hits it; that
    depends only on the detections of the lesion's own volume, so the steps also
    serve a bootstrap over volumes (:mod:`~napari_lesion_harvest.evaluation.bootstrap`).
    """
    scores = np.asarray(matches.scores, dtype=np.float64)
    n_det = len(scores)
    # Decreasing score, equal scores in reverse input order (stable ascending, reversed).
    order = np.argsort(scores, kind="stable")[::-1]
    rank = np.empty(n_det, dtype=np.int64)
    rank[order] = np.arange(n_det)
    pairs_per_detection = np.bincount(matches.hit_detection, minlength=n_det)[order]
    # A lesion is found at the lowest rank among the detections hitting it.
    first_rank = np.full(matches.n_lesions, n_det, dtype=np.int64)
    np.minimum.at(first_rank, matches.hit_lesion, rank[matches.hit_detection])
    found = np.bincount(first_rank[first_rank < n_det], minlength=n_det)
    return RankedSteps(
        order=order,
        scores=scores[order],
        found=found,
        misses=(pairs_per_detection == 0).astype(np.int64),
        repeat_hits=pairs_per_detection - found,
    )


def detection_curve(matches: Matches, *, collapse_ties: bool = True) -> DetectionCurve:
    """Cumulative TP / FP counts of ``matches`` over a decreasing score threshold.

    Parameters
    ----------
    matches : Matches
    collapse_ties : bool, optional
        Keep one operating point per distinct score (default). ``False``
        keeps one point per detection, equal scores in reverse input order,
        as the released code does with a stable sort.

    Returns
    -------
    DetectionCurve
    """
    if matches.n_images <= 0:
        raise ValueError("the test set has no volumes (no images to count false positives on)")
    steps = ranked_steps(matches)
    true_positives = np.cumsum(steps.found)
    misses = np.cumsum(steps.misses)
    repeat_hits = np.cumsum(steps.repeat_hits)
    points = steps.last_of_each_score() if collapse_ties else np.arange(len(steps.scores))
    return DetectionCurve(
        thresholds=steps.scores[points],
        n_selected=points + 1,
        true_positives=true_positives[points],
        false_positives=misses[points],
        voc_false_positives=(misses + repeat_hits)[points],
        n_lesions=int(matches.n_lesions),
        n_images=int(matches.n_images),
    )
