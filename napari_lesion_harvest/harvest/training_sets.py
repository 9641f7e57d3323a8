"""What the LPG and LPC learn from in a round, read off the round's snapshot.

Which marks a round may use:

* ``V_M`` and ``V_H``: every live mark (original and expert);
* ``V_H_test``: original marks only (its full marks are hidden: they evaluate);
* ``V_D_test``: nothing.

Which pooled proposals are positives and negatives (paper, Sec. III-E): an
expert verdict decides when there is one (accepted: positive, rejected:
negative); otherwise ``P_RM``, ``P_RH`` and ``P_pos_H`` are positives and
``P_neg_M`` and ``P_neg_H`` are hard negatives.

A round may keep the LPG from learning known lesions as background on the
training slices they cross away from their own (:func:`known_lesion_region`; config
field ``lpg.ignore_known_lesions``, not in the paper).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from napari_lesion_harvest.geometry import RecistMark, iou_2d
from napari_lesion_harvest.vocabulary import Origin, Role, Split, Verdict

POSITIVE_ROLES = (Role.P_RM, Role.P_RH, Role.P_pos_H)
NEGATIVE_ROLES = (Role.P_neg_M, Role.P_neg_H)
#: Splits whose volumes a round scans and harvests.
HARVEST_SPLITS = (Split.V_M, Split.V_H, Split.V_H_test)
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
    ignore_boxes : ndarray, shape (K, 4)
        ``xyxy`` regions where a known lesion may show without a box of its own on
        this slice: not taught as background (none of the hard negatives lies on one,
        :func:`on_regions`).
    """

    volume_id: str
    z: int
    positive_boxes: np.ndarray
    hard_negative_boxes: np.ndarray
    ignore_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))


def usable_marks(snapshot) -> dict[str, list[RecistMark]]:
    """The marks a round may train and verify with, by volume (see module notes)."""
    usable: dict[str, list[RecistMark]] = {}
    for split in HARVEST_SPLITS:
        for record in snapshot.volumes.get(split, []):
            stored = snapshot.marks.get(record.volume_id, [])
            if split == Split.V_H_test:
                stored = [s for s in stored if s.origin == Origin.original]
            usable[record.volume_id] = [s.mark for s in stored]
    return usable


def proposal_polarity(stored) -> bool | None:
    """True (positive), False (hard negative) or None (neither) for a stored proposal."""
    if stored.verdict is not None:
        return stored.verdict.verdict == Verdict.accepted
    if stored.role in POSITIVE_ROLES:
        return True
    if stored.role in NEGATIVE_ROLES:
        return False
    return None


def known_lesion_region(mark: RecistMark, spacing, num_slices: int):
    """The slices and the ``xyxy`` box where the lesion of a RECIST mark may show.

    A RECIST mark tells the lesion's longest axial diameter ``d`` on its key slice
    and nothing about its extent along z. The bound is meant to hold for real
    lesions, so it is generous; what it costs is only the background that a box
    around a known lesion no longer teaches.

    * Along z: the lesion reaches at most ``d`` above and below the key slice, plus
      half a slice (a slice images a slab of its thickness). Lesions are compact:
      a lesion no longer craniocaudally than its longest axial diameter ends within
      ``d`` of any slice through it, wherever the radiologist's key slice lies in it
      (it need not be the widest level); one whose key slice is its widest level,
      as RECIST asks, may be up to ``2 d`` long (an ovoid lymph node along the body
      axis).
    * In-plane: the key slice's section has longest diameter ``d``. An elliptical
      section of long diameter ``d``, whatever its orientation, fits in the
      axis-aligned square of side ``d`` (in mm) around the long axis's midpoint;
      the box is that square joined with the mark's own box (DeepLesion's
      endpoint box, padded). A compact lesion's other sections are no wider than
      its widest, but a lesion tilted against the body axis shifts them sideways,
      so the box does not shrink away from the key slice.

    Parameters
    ----------
    mark : RecistMark
    spacing : (float, float, float)
        Voxel spacing ``(sz, sy, sx)`` in mm.
    num_slices : int
        ``Z`` of the volume.

    Returns
    -------
    slices : ndarray of int, shape (S,)
        Increasing slice indices within ``0..Z - 1``, the key slice among them.
    box : ndarray, shape (4,)
        ``xyxy``, pixel coordinates (not clipped to the image).
    """
    sz, sy, sx = (float(s) for s in spacing)
    diameter_mm = mark.diameters_mm((sy, sx))[0]
    reach = int(np.floor((diameter_mm + sz / 2) / sz))
    slices = np.arange(max(0, mark.z - reach), min(num_slices - 1, mark.z + reach) + 1)
    centre_x, centre_y = mark.long_axis.mean(axis=0)
    half_x, half_y = diameter_mm / 2 / sx, diameter_mm / 2 / sy
    square = np.array([centre_x - half_x, centre_y - half_y, centre_x + half_x, centre_y + half_y])
    own = mark.box()
    box = np.concatenate([np.minimum(square[:2], own[:2]), np.maximum(square[2:], own[2:])])
    return slices, box


def on_regions(boxes: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Which ``boxes`` lie on one of ``regions``: centre inside it, or IoU above
    :data:`NEGATIVE_CONFLICT_IOU` (the rule that keeps hard negatives off positives).

    Parameters
    ----------
    boxes : ndarray, shape (N, 4)
    regions : ndarray, shape (K, 4)
        Both ``xyxy``.

    Returns
    -------
    ndarray of bool, shape (N,)
    """
    if not len(boxes) or not len(regions):
        return np.zeros(len(boxes), dtype=bool)
    centres = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2
    inside = ((centres >= regions[None, :, :2]) & (centres <= regions[None, :, 2:])).all(-1)
    return inside.any(1) | (iou_2d(boxes, regions).max(axis=1) > NEGATIVE_CONFLICT_IOU)


def known_lesion_boxes(snapshot, stored_positives) -> dict[tuple[str, int], list[np.ndarray]]:
    """Where known lesions show away from their own training slice, by ``(volume, z)``.

    A usable mark's lesion may show on the slices and in the box of
    :func:`known_lesion_region` (spacing 1 mm on every axis where the volume record
    has none). A positive proposal's lesion shows in its tracked boxes: its
    extent is known there, and its box on each slice is where it is, so that box
    is used as is. Those boxes are the LPG's own detections, with sizes it
    guessed and, for ``P_pos_H``, on proposals of which about one in twenty is no
    lesion at the harvest's precision, so they are ignored there rather than
    taught as positives.

    Parameters
    ----------
    snapshot : RoundSnapshot
    stored_positives : iterable of StoredProposal
        Positive proposals (pool or judged) of harvested volumes.

    Returns
    -------
    dict
        ``(volume_id, z)`` to the ``xyxy`` boxes, never on the mark's key slice or
        the proposal's best slice (there they are positives).
    """
    records = {r.volume_id: r for r in volume_records(snapshot)}
    regions: dict[tuple[str, int], list[np.ndarray]] = defaultdict(list)
    for volume_id, marks in usable_marks(snapshot).items():
        record = records[volume_id]
        for mark in marks:
            slices, box = known_lesion_region(
                mark, record.spacing or (1.0, 1.0, 1.0), record.shape[0]
            )
            for z in slices[slices != mark.z]:
                regions[volume_id, int(z)].append(box)
    for stored in stored_positives:
        proposal = stored.proposal
        for z, box in zip(proposal.slices, proposal.boxes, strict=True):
            if z != proposal.best_slice:
                regions[stored.volume_id, int(z)].append(box)
    return regions


def lpg_training_slices(
    snapshot,
    *,
    use_pool: bool,
    ignore_known_lesions: bool = False,
) -> list[TrainingSlice]:
    """The LPG's training slices: every slice with a usable mark, plus, when
    fine-tuning (``use_pool``), the highest-objectness slice of every pooled
    or judged proposal, as a positive or a hard negative.

    A lesion spans several slices, but a proposal gives its training slice
    only at its best slice, so a known lesion is background on the other
    training slices it crosses (the paper's rule).

    With ``ignore_known_lesions``, each slice's ``ignore_boxes`` are the
    :func:`known_lesion_boxes` of the usable marks and (fine-tuning) of the positive
    proposals, and a hard negative that lies on one of them (:func:`on_regions`) is
    left out: what a known lesion shows away from its own slice is taught neither
    as background nor as a hard negative.

    Returns
    -------
    list of TrainingSlice
        Sorted by volume id and slice.
    """
    positives: dict[tuple[str, int], list[np.ndarray]] = {}
    negatives: dict[tuple[str, int], list[np.ndarray]] = {}
    positive_proposals = []
    for volume_id, marks in usable_marks(snapshot).items():
        for mark in marks:
            positives.setdefault((volume_id, mark.z), []).append(mark.box())
    if use_pool:
        judged = {p.id: p for p in snapshot.previous_pool}
        judged.update({p.id: p for p in snapshot.verdicts})
        harvested = {r.volume_id for r in volume_records(snapshot)}
        for stored in judged.values():
            polarity = proposal_polarity(stored)
            if polarity is None or stored.volume_id not in harvested:
                continue
            proposal = stored.proposal
            key = (stored.volume_id, proposal.best_slice)
            (positives if polarity else negatives).setdefault(key, []).append(proposal.best_box)
            if polarity:
                positive_proposals.append(stored)
    known_lesions = (
        known_lesion_boxes(snapshot, positive_proposals) if ignore_known_lesions else {}
    )
    slices = []
    for key in sorted(set(positives) | set(negatives)):
        pos = np.array(positives.get(key, []), dtype=np.float64).reshape(-1, 4)
        neg = np.array(negatives.get(key, []), dtype=np.float64).reshape(-1, 4)
        if len(pos) and len(neg):
            neg = neg[iou_2d(neg, pos).max(axis=1) <= NEGATIVE_CONFLICT_IOU]
        ignored = np.array(known_lesions.get(key, []), dtype=np.float64).reshape(-1, 4)
        neg = neg[~on_regions(neg, ignored)]
        slices.append(TrainingSlice(key[0], key[1], pos, neg, ignored))
    return slices


def volume_records(snapshot, splits: Iterable[str] = HARVEST_SPLITS) -> list:
    """The snapshot's volume records of ``splits``, in split order."""
    return [record for split in splits for record in snapshot.volumes.get(split, [])]
