"""What the LPG and LPC learn from in a round, read off the round's snapshot.

Which marks a round may use:

* ``V_M`` and ``V_H``: every live mark (original and expert);
* ``V_H_test``: original marks only (its full marks are hidden: they evaluate);
* ``V_D_test``: nothing.

Which pooled proposals are positives and negatives (paper, Sec. III-E): an
expert verdict decides when there is one (accepted: positive, rejected:
negative); otherwise ``P_RM``, ``P_RH`` and ``P_pos_H`` are positives and
``P_neg_M`` and ``P_neg_H`` are hard negatives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.geometry import RecistMark, iou_2d

POSITIVE_ROLES = ("P_RM", "P_RH", "P_pos_H")
NEGATIVE_ROLES = ("P_neg_M", "P_neg_H")
#: Splits whose volumes a round scans and harvests.
HARVEST_SPLITS = ("V_M", "V_H", "V_H_test")
#: A hard-negative box overlapping a positive box on its slice by more is dropped.
NEGATIVE_CONFLICT_IOU = 0.3


@dataclass
class TrainingSlice:
    """One LPG training slice.

    Attributes
    ----------
    volume_id : str
    z : int
    positive_boxes : ndarray, shape (N, 4)
        ``xyxy`` lesion boxes.
    hard_negative_boxes : ndarray, shape (M, 4)
        ``xyxy`` hard-negative boxes (none overlaps a positive by more than
        :data:`NEGATIVE_CONFLICT_IOU`).
    """

    volume_id: str
    z: int
    positive_boxes: np.ndarray
    hard_negative_boxes: np.ndarray


def usable_marks(snapshot) -> dict[str, list[RecistMark]]:
    """The marks a round may train and verify with, by volume (see module notes)."""
    usable: dict[str, list[RecistMark]] = {}
    for split in HARVEST_SPLITS:
        for record in snapshot.volumes.get(split, []):
            stored = snapshot.marks.get(record.volume_id, [])
            if split == "V_H_test":
                stored = [s for s in stored if s.origin == "original"]
            usable[record.volume_id] = [s.mark for s in stored]
    return usable


def proposal_polarity(stored) -> bool | None:
    """True (positive), False (hard negative) or None (neither) for a stored proposal."""
    if stored.verdict is not None:
        return stored.verdict.verdict == "accepted"
    if stored.role in POSITIVE_ROLES:
        return True
    if stored.role in NEGATIVE_ROLES:
        return False
    return None


def lpg_training_slices(snapshot, *, use_pool: bool) -> list[TrainingSlice]:
    """The LPG's training slices: every slice with a usable mark, plus, when
    fine-tuning (``use_pool``), the highest-objectness slice of every pooled
    or judged proposal, as a positive or a hard negative.

    Returns
    -------
    list of TrainingSlice
        Sorted by volume id and slice.
    """
    positives: dict[tuple[str, int], list[np.ndarray]] = {}
    negatives: dict[tuple[str, int], list[np.ndarray]] = {}
    for volume_id, marks in usable_marks(snapshot).items():
        for mark in marks:
            positives.setdefault((volume_id, mark.z), []).append(mark.box())
    if use_pool:
        judged = {p.id: p for p in snapshot.previous_pool}
        judged.update({p.id: p for p in snapshot.verdicts})
        harvested = {r.volume_id for s in HARVEST_SPLITS for r in snapshot.volumes.get(s, [])}
        for stored in judged.values():
            polarity = proposal_polarity(stored)
            if polarity is None or stored.volume_id not in harvested:
                continue
            key = (stored.volume_id, stored.proposal.best_slice)
            (positives if polarity else negatives).setdefault(key, []).append(
                stored.proposal.best_box
            )
    slices = []
    for key in sorted(set(positives) | set(negatives)):
        pos = np.array(positives.get(key, []), dtype=np.float64).reshape(-1, 4)
        neg = np.array(negatives.get(key, []), dtype=np.float64).reshape(-1, 4)
        if len(pos) and len(neg):
            neg = neg[iou_2d(neg, pos).max(axis=1) <= NEGATIVE_CONFLICT_IOU]
        slices.append(TrainingSlice(key[0], key[1], pos, neg))
    return slices


def volume_records(snapshot, splits: Iterable[str] = HARVEST_SPLITS) -> list:
    """The snapshot's volume records of ``splits``, in split order."""
    return [record for split in splits for record in snapshot.volumes.get(split, [])]
