"""Which detection hits which lesion: the P3D, true 3D and incomplete 2D RECIST rules.

Each rule returns :class:`Matches`: a confidence per detection and the list
of (detection, lesion) pairs that count as a hit. Counting (FROC, AP, PR)
happens on that in :mod:`napari_lesion_harvest.evaluation.curve`.

``plus_one=True`` (default) is the released evaluation's pixel convention:
widths and heights (and, for 3D boxes, depths) are ``hi - lo + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.arrays import equal_key_pairs
from napari_lesion_harvest.evaluation.tables import BoxTruth3D, ProposalTable, RecistTruth
from napari_lesion_harvest.geometry import iou_2d, iou_3d

#: 2D IoU a proposal's box must reach on a RECIST mark's slice (P3D and 2D rules).
IOU_THRESHOLD_2D = 0.5
#: 3D IoU threshold of the paper's gold-standard metric (Sec. IV-B uses 0.33).
IOU_THRESHOLD_3D = 0.33


@dataclass(frozen=True)
class Matches:
    """Detections, their confidences, and the pairs that hit a lesion.

    Attributes
    ----------
    scores : ndarray, shape (D,)
        Confidence of each detection.
    hit_detection : ndarray of int64, shape (H,)
        Detection index of each hit pair (no pair appears twice).
    hit_lesion : ndarray of int64, shape (H,)
        Lesion index of each hit pair, in ``[0, n_lesions)``.
    n_lesions : int
        Lesions of the test set (the sensitivity's denominator).
    n_images : int
        Units the false-positive rate is counted per: volumes for P3D and 3D,
        marked slices for the 2D RECIST rule.
    """

    scores: np.ndarray
    hit_detection: np.ndarray
    hit_lesion: np.ndarray
    n_lesions: int
    n_images: int


def _check_same_test_set(truth, detections: ProposalTable) -> None:
    if tuple(truth.volume_ids) != tuple(detections.volume_ids):
        raise ValueError(
            "detections were tabulated over a different volume list than the truth; build "
            "them with ProposalTable.from_proposals(..., volume_ids=truth.volume_ids)"
        )


def _same_slice_pairs(
    truth: RecistTruth, detections: ProposalTable
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (per-slice row, mark) on the same slice of the same volume."""
    z_all = np.r_[truth.z, detections.slice_z]
    if z_all.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    z_min, span = z_all.min(), z_all.max() - z_all.min() + 1
    row_volume = detections.proposal_volume[detections.slice_proposal]
    row_key = row_volume * span + (detections.slice_z - z_min)
    mark_key = truth.volume * span + (truth.z - z_min)
    return equal_key_pairs(row_key, mark_key)


def match_p3d(
    truth: RecistTruth,
    detections: ProposalTable,
    *,
    iou_threshold: float = IOU_THRESHOLD_2D,
    plus_one: bool = True,
) -> Matches:
    """Pseudo-3D (P3D) rule: a proposal hits a RECIST box on slice ``z`` iff it has
    a box on slice ``z`` whose 2D IoU with the RECIST box is ``>= iou_threshold``.

    A proposal that spans ``z`` without a box on ``z`` does not hit (the released
    evaluation looks the slice up in the proposal's per-slice boxes).

    Returns
    -------
    Matches
        One detection per proposal, confidence = highest per-slice score;
        ``n_images`` = volumes of the test set.
    """
    _check_same_test_set(truth, detections)
    row, mark = _same_slice_pairs(truth, detections)
    iou = iou_2d(
        detections.slice_boxes[row], truth.boxes[mark], plus_one=plus_one, elementwise=True
    )
    hit = iou >= iou_threshold
    return Matches(
        scores=detections.proposal_score,
        hit_detection=detections.slice_proposal[row[hit]],
        hit_lesion=mark[hit],
        n_lesions=truth.n_lesions,
        n_images=len(truth.volume_ids),
    )


def match_recist_2d(
    truth: RecistTruth,
    detections: ProposalTable,
    *,
    iou_threshold: float = IOU_THRESHOLD_2D,
    plus_one: bool = True,
) -> Matches:
    """The incomplete 2D RECIST rule used before the paper (e.g. 3DCE, MULAN).

    Only the marked slices are looked at: every per-slice box of a proposal on
    a slice that carries a mark is one 2D detection with its own per-slice
    score; it hits a mark of that slice iff their 2D IoU is ``>= iou_threshold``.
    Boxes on unmarked slices are ignored, and false positives are counted per
    marked slice (``n_images`` = distinct marked slices), as in that protocol.
    """
    _check_same_test_set(truth, detections)
    row, mark = _same_slice_pairs(truth, detections)
    marked_rows = np.unique(row)
    iou = iou_2d(
        detections.slice_boxes[row], truth.boxes[mark], plus_one=plus_one, elementwise=True
    )
    hit = iou >= iou_threshold
    marked_slices = np.unique(np.c_[truth.volume, truth.z], axis=0)
    return Matches(
        scores=detections.slice_scores[marked_rows],
        hit_detection=np.searchsorted(marked_rows, row[hit]),
        hit_lesion=mark[hit],
        n_lesions=truth.n_lesions,
        n_images=len(marked_slices),
    )


def match_3d(
    truth: BoxTruth3D,
    detections: ProposalTable,
    *,
    iou_threshold: float = IOU_THRESHOLD_3D,
    plus_one: bool = True,
) -> Matches:
    """True 3D rule: a proposal hits a 3D lesion box of its volume iff the 3D IoU of
    the proposal's enclosing box and the lesion box is ``>= iou_threshold``.

    With ``plus_one`` slice ranges are inclusive (a one-slice box has depth 1).
    """
    _check_same_test_set(truth, detections)
    proposal, lesion = equal_key_pairs(detections.proposal_volume, truth.volume)
    iou = iou_3d(
        detections.proposal_boxes_3d()[proposal],
        truth.boxes[lesion],
        plus_one=plus_one,
        elementwise=True,
    )
    hit = iou >= iou_threshold
    return Matches(
        scores=detections.proposal_score,
        hit_detection=proposal[hit],
        hit_lesion=lesion[hit],
        n_lesions=truth.n_lesions,
        n_images=len(truth.volume_ids),
    )
