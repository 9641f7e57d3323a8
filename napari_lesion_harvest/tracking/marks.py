"""Which 3D proposals hit a RECIST mark: the evaluation's P3D rule, applied per volume.

A harvest round splits proposals by this (in V_M: P_RM vs P_neg_M; in V_H:
P_RH). The rule itself lives in :func:`napari_lesion_harvest.evaluation.matching.match_p3d`
so that harvesting and evaluation can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from napari_lesion_harvest.evaluation.matching import IOU_THRESHOLD_2D, match_p3d
from napari_lesion_harvest.evaluation.tables import ProposalTable, RecistTruth
from napari_lesion_harvest.geometry import Proposal3D, iou_2d


def proposals_hitting_marks(
    proposals: Mapping[str, Sequence[Proposal3D]],
    marks: Mapping[str, object],
    *,
    iou_threshold: float = IOU_THRESHOLD_2D,
    plus_one: bool = True,
) -> dict[str, np.ndarray]:
    """Flag every proposal that hits at least one RECIST mark of its volume (P3D rule).

    Parameters
    ----------
    proposals : mapping of str to sequence of Proposal3D
        Per volume id, its 3D proposals.
    marks : mapping of str to marks
        Per volume id, its RECIST marks in any form
        :meth:`~napari_lesion_harvest.evaluation.tables.RecistTruth.from_mapping`
        accepts (a list of ``RecistMark``, a ``(slices (M,), boxes (M, 4))``
        pair, ...). Volumes of ``proposals`` missing here have no marks.
    iou_threshold : float, optional
        2D IoU the proposal's box on the mark's slice must reach (0.5).
    plus_one : bool, optional
        Pixel convention of the released evaluation (widths ``x2 - x1 + 1``).

    Returns
    -------
    dict of str to ndarray of bool
        Per volume of ``proposals``, shape ``(P,)``: whether proposal ``i``
        hits a mark.
    """
    volume_ids = [str(v) for v in proposals]
    truth = RecistTruth.from_mapping({v: marks.get(v, ()) for v in volume_ids})
    table = ProposalTable.from_proposals(
        {str(v): list(p) for v, p in proposals.items()}, volume_ids
    )
    matches = match_p3d(truth, table, iou_threshold=iou_threshold, plus_one=plus_one)
    hit = np.zeros(table.n_proposals, dtype=bool)
    hit[matches.hit_detection] = True
    counts = np.cumsum([0] + [len(p) for p in proposals.values()])
    return {v: hit[lo:hi] for v, lo, hi in zip(volume_ids, counts[:-1], counts[1:], strict=True)}


def best_slice_boxes(proposals: Sequence[Proposal3D]) -> tuple[np.ndarray, np.ndarray]:
    """Each proposal's highest-objectness slice and box, as marks for
    :func:`proposals_hitting_marks`: shapes ``(P,)`` and ``(P, 4)`` (``xyxy``)."""
    slices = np.array([p.best_slice for p in proposals], dtype=np.int64)
    boxes = np.array([p.best_box for p in proposals], dtype=np.float64).reshape(-1, 4)
    return slices, boxes


def proposals_touching_marked_lesions(
    proposals: Sequence[Proposal3D],
    marks: Sequence,
    spacing,
    *,
    iou_threshold: float = 0.3,
) -> np.ndarray:
    """Flag proposals that lie on a marked lesion, hitting its mark (P3D) or not.

    A RECIST mark is drawn on one slice, but its lesion spans the neighbouring
    slices too. A proposal on those slices only, or one whose box on the mark's
    slice is offset, misses the P3D rule although it sits on the lesion. Taken
    as a negative it would teach the models that lesions are not lesions.

    The lesion is taken to span the mark's slice plus half its long diameter
    (and one slice) in millimetres above and below. A proposal touches it when,
    on its slice nearest to the mark's slice and within that span, its box
    overlaps the mark's box by at least ``iou_threshold``.

    Parameters
    ----------
    proposals : sequence of Proposal3D
        The proposals of one volume.
    marks : sequence of RecistMark
        The RECIST marks of that volume.
    spacing : (float, float, float)
        Voxel spacing ``(sz, sy, sx)`` in mm.
    iou_threshold : float, optional
        Box IoU with the mark's box on the proposal's nearest slice (0.3).

    Returns
    -------
    ndarray of bool, shape (P,)
        Callers combine it with :func:`proposals_hitting_marks` (a proposal that
        hits a mark also touches it).
    """
    sz, sy, sx = (float(s) for s in spacing)
    touching = np.zeros(len(proposals), dtype=bool)
    for mark in marks:
        half_span_mm = max(mark.diameters_mm((sy, sx))) / 2 + sz
        mark_box = mark.box()[None]
        for i, proposal in enumerate(proposals):
            slices = np.asarray(proposal.slices)
            nearest = int(np.argmin(np.abs(slices - mark.z)))
            if abs(slices[nearest] - mark.z) * sz > half_span_mm:
                continue
            box = proposal.boxes[nearest][None]
            touching[i] |= iou_2d(box, mark_box)[0, 0] >= iou_threshold
    return touching
