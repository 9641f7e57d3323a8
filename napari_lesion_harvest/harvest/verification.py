"""Which proposals are verified: P3D matching to marks and to the expert's verdicts.

The IoU rule itself is the evaluation module's
(:func:`napari_lesion_harvest.evaluation.matching.match_p3d`): one definition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D, RecistMark


def mark_boxes(marks: Sequence[RecistMark]) -> tuple[np.ndarray, np.ndarray]:
    """Slices and ``xyxy`` boxes of RECIST marks: shapes ``(M,)`` and ``(M, 4)``."""
    slices = np.array([m.z for m in marks], dtype=np.int64)
    boxes = np.array([m.box() for m in marks], dtype=np.float64).reshape(-1, 4)
    return slices, boxes


def best_slice_boxes(proposals: Sequence[Proposal3D]) -> tuple[np.ndarray, np.ndarray]:
    """Each proposal's highest-objectness slice and box: shapes ``(P,)`` and ``(P, 4)``."""
    slices = np.array([p.best_slice for p in proposals], dtype=np.int64)
    boxes = np.array([p.best_box for p in proposals], dtype=np.float64).reshape(-1, 4)
    return slices, boxes


def proposals_hitting(
    proposals: Mapping[str, Sequence[Proposal3D]],
    targets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    iou_threshold: float = 0.5,
) -> dict[str, np.ndarray]:
    """Which proposals hit a target box under the P3D rule.

    Parameters
    ----------
    proposals : mapping volume_id -> sequence of Proposal3D
    targets : mapping volume_id -> (slices (M,), boxes (M, 4))
        2D target boxes (RECIST mark boxes, or the best-slice boxes of proposals
        the expert judged); volumes missing here have none.
    iou_threshold : float
        2D IoU a proposal's box must reach on the target's slice.

    Returns
    -------
    dict volume_id -> ndarray of bool, shape (P,)
        True for each proposal hitting at least one target.
    """
    from napari_lesion_harvest.evaluation.matching import match_p3d
    from napari_lesion_harvest.evaluation.tables import ProposalTable, RecistTruth

    volume_ids = list(proposals)
    if not volume_ids:
        return {}
    empty = (np.zeros(0, np.int64), np.zeros((0, 4)))
    truth = RecistTruth.from_mapping({v: targets.get(v, empty) for v in volume_ids})
    table = ProposalTable.from_proposals(proposals, volume_ids)
    matches = match_p3d(truth, table, iou_threshold=iou_threshold)
    hit = np.zeros(table.n_proposals, dtype=bool)
    hit[matches.hit_detection] = True
    counts = [len(proposals[v]) for v in volume_ids]
    return dict(zip(volume_ids, np.split(hit, np.cumsum(counts)[:-1]), strict=True))
