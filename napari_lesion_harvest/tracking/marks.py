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
from napari_lesion_harvest.geometry import Proposal3D


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
