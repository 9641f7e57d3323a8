"""What the LPG and LPC learn from in a round, read off the round's snapshot.

Which marks a round may use:

* ``V_M`` and ``V_H``: every live mark (original and expert);
* ``V_H_test``: original marks only (its full marks are hidden: they evaluate);
* ``V_D_test``: nothing.

Which pooled proposals are positives and negatives (paper, Sec. III-E): an
expert verdict decides when there is one (accepted: positive, rejected:
negative); otherwise ``P_RM``, ``P_RH`` and ``P_pos_H`` are positives and
``P_neg_M`` and ``P_neg_H`` are hard negatives.

A round may leave out of the negatives the *lesion pieces*: negatives by role
that overlap a usable mark's lesion away from its RECIST slice
(:func:`lesion_pieces`; config field ``exclude_lesion_pieces``, not in the paper).
It may also mark the fine-tuning slices of ``V_H`` volumes that hold no positive
as slices whose background is unknown (config field
``lpg_ignore_unmarked_background``, not in the paper), and draw the fine-tuning
slices that hold a positive more often, or only those
(:func:`drawn_fine_tuning_slices`; config field ``lpg_finetune_slices``, not in the
paper).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.geometry import RecistMark, iou_2d
from napari_lesion_harvest.tracking.marks import proposals_touching_marked_lesions

POSITIVE_ROLES = ("P_RM", "P_RH", "P_pos_H")
NEGATIVE_ROLES = ("P_neg_M", "P_neg_H")
#: Splits whose volumes a round scans and harvests.
HARVEST_SPLITS = ("V_M", "V_H", "V_H_test")
#: A hard-negative box overlapping a positive box on its slice by more is dropped.
NEGATIVE_CONFLICT_IOU = 0.3
#: A positive proposal's box on a training slice that overlaps a positive there by
#: this much is the same lesion, already a positive.
SAME_LESION_IOU = 0.5


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
    background_known : bool
        Whether every pixel outside the boxes is background (see
        :class:`~napari_lesion_harvest.lpg.data.LPGSample`).
    """

    volume_id: str
    z: int
    positive_boxes: np.ndarray
    hard_negative_boxes: np.ndarray
    background_known: bool = True


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


def lesion_pieces(snapshot, stored_proposals) -> set[int]:
    """Ids of the stored proposals that sit on a lesion with a usable mark without
    hitting the mark (``proposals_touching_marked_lesions`` of
    :mod:`napari_lesion_harvest.tracking.marks` decides).

    Parameters
    ----------
    snapshot : RoundSnapshot
        Gives the usable marks and each volume's spacing (1 mm on every axis
        where the record has none, so the lesion's span is counted in pixels).
    stored_proposals : iterable of StoredProposal

    Returns
    -------
    set of int
    """
    marks = usable_marks(snapshot)
    spacing = {r.volume_id: r.spacing or (1.0, 1.0, 1.0) for r in volume_records(snapshot)}
    by_volume = defaultdict(list)
    for stored in stored_proposals:
        if marks.get(stored.volume_id):
            by_volume[stored.volume_id].append(stored)
    pieces = set()
    for volume_id, chosen in by_volume.items():
        touching = proposals_touching_marked_lesions(
            [s.proposal for s in chosen], marks[volume_id], spacing[volume_id]
        )
        pieces.update(s.id for s, flag in zip(chosen, touching, strict=True) if flag)
    return pieces


def lpg_training_slices(
    snapshot,
    *,
    use_pool: bool,
    crossing_positives: bool = False,
    exclude_lesion_pieces: bool = False,
    ignore_unmarked_background: bool = False,
) -> list[TrainingSlice]:
    """The LPG's training slices: every slice with a usable mark, plus, when
    fine-tuning (``use_pool``), the highest-objectness slice of every pooled
    or judged proposal, as a positive or a hard negative.

    A lesion spans several slices, but a proposal gives its training slice
    only at its best slice, so a known lesion is background on the other
    training slices it crosses. With ``crossing_positives``, every positive
    proposal also adds its box on each of those slices (unless a positive there
    already overlaps it by IoU >= :data:`SAME_LESION_IOU`).

    With ``exclude_lesion_pieces``, a negative by role (no expert verdict) that
    is one of the :func:`lesion_pieces` is left out.

    With ``ignore_unmarked_background``, a slice outside ``V_M`` (not fully
    annotated) that holds no positive has ``background_known`` False.

    Returns
    -------
    list of TrainingSlice
        Sorted by volume id and slice.
    """
    positives: dict[tuple[str, int], list[np.ndarray]] = {}
    negatives: dict[tuple[str, int], list[np.ndarray]] = {}
    crossing: dict[tuple[str, int], list[np.ndarray]] = defaultdict(list)  # off best slice
    for volume_id, marks in usable_marks(snapshot).items():
        for mark in marks:
            positives.setdefault((volume_id, mark.z), []).append(mark.box())
    if use_pool:
        judged = {p.id: p for p in snapshot.previous_pool}
        judged.update({p.id: p for p in snapshot.verdicts})
        harvested = {r.volume_id for r in volume_records(snapshot)}
        pieces = (
            lesion_pieces(
                snapshot,
                (p for p in judged.values() if p.verdict is None and p.role in NEGATIVE_ROLES),
            )
            if exclude_lesion_pieces
            else set()
        )
        for stored in judged.values():
            polarity = proposal_polarity(stored)
            if polarity is None or stored.volume_id not in harvested or stored.id in pieces:
                continue
            proposal = stored.proposal
            key = (stored.volume_id, proposal.best_slice)
            (positives if polarity else negatives).setdefault(key, []).append(proposal.best_box)
            if polarity and crossing_positives:
                for z, box in zip(proposal.slices, proposal.boxes, strict=True):
                    if z != proposal.best_slice:
                        crossing[stored.volume_id, int(z)].append(box)
    complete = {r.volume_id for r in volume_records(snapshot, ("V_M",))}
    slices = []
    for key in sorted(set(positives) | set(negatives)):
        pos = np.array(positives.get(key, []), dtype=np.float64).reshape(-1, 4)
        for box in crossing.get(key, []):
            if not len(pos) or iou_2d(box[None], pos).max() < SAME_LESION_IOU:
                pos = np.vstack([pos, box])
        neg = np.array(negatives.get(key, []), dtype=np.float64).reshape(-1, 4)
        if len(pos) and len(neg):
            neg = neg[iou_2d(neg, pos).max(axis=1) <= NEGATIVE_CONFLICT_IOU]
        known = not (ignore_unmarked_background and key[0] not in complete and not len(pos))
        slices.append(TrainingSlice(key[0], key[1], pos, neg, known))
    return slices


#: Choices of ``lpg_finetune_slices``: every slice once (the paper), slices with a
#: positive repeated until they make about half of the draws, or only those.
FINE_TUNING_SLICE_CHOICES = ("all", "balanced", "with_positive")


def drawn_fine_tuning_slices(slices: list[TrainingSlice], choice: str) -> list[TrainingSlice]:
    """The fine-tuning slices as the LPG's sampler draws them.

    Most fine-tuning slices come from the pool's negatives and hold no positive;
    the focal loss divides a batch's loss by its number of positives, so such
    batches push the objectness of everything lesion-like down.

    Parameters
    ----------
    slices : list of TrainingSlice
        From :func:`lpg_training_slices`.
    choice : str
        ``"all"``: each slice once (the paper). ``"balanced"``: each slice with a
        positive listed ``max(1, round(without / with))`` times, where ``with`` and
        ``without`` count the slices with and without a positive, so that about
        half of the draws hold a positive. ``"with_positive"``: only slices with a
        positive (their hard negatives stay).

    Returns
    -------
    list of TrainingSlice
        Repeats are the same objects; the order of ``slices`` is kept.
    """
    if choice not in FINE_TUNING_SLICE_CHOICES:
        raise ValueError(
            f"lpg_finetune_slices must be one of {FINE_TUNING_SLICE_CHOICES}, got {choice!r}"
        )
    with_positive = [s for s in slices if len(s.positive_boxes)]
    if choice == "all" or not with_positive:
        return list(slices)
    if choice == "with_positive":
        return with_positive
    repeats = max(1, round((len(slices) - len(with_positive)) / len(with_positive)))
    return [s for s in slices for _ in range(repeats if len(s.positive_boxes) else 1)]


def volume_records(snapshot, splits: Iterable[str] = HARVEST_SPLITS) -> list:
    """The snapshot's volume records of ``splits``, in split order."""
    return [record for split in splits for record in snapshot.volumes.get(split, [])]
