"""Stack 2D lesion proposals of consecutive slices into 3D proposals.

Following Cai et al. (Sec. III-B2, after Yang et al.):

1. keep the 2D boxes whose score is ``>= score_threshold`` (the paper's t_G);
2. link boxes of consecutive slices with a Kalman box tracker
   (:mod:`~napari_lesion_harvest.tracking.kalman`): every track predicts its
   box on the next slice, predictions and boxes of the same volume are
   assigned by the Hungarian method, and a pair is linked when its IoU is
   ``> link_iou``; a track that finds no box on the next slice ends;
3. extend every tracklet ``extend_slices`` slices up and down (repeating its
   end boxes) and fuse two tracklets that then share a slice when their boxes
   there overlap with IoU ``>= fuse_iou``, so a lesion the LPG missed on one
   intermediate slice stays one proposal. A bridged slice gets the linear
   interpolation of its neighbours' boxes and score 0.

The slices of many volumes are processed together (slice ``z`` of every
volume in one array step): :func:`stack_proposals_batch` is what a harvest
round calls; :func:`stack_proposals` is the one-volume form. In both passes
only pairs whose box centres are close enough to reach the IoU threshold are
compared (:func:`~napari_lesion_harvest.tracking.pairing.overlap_candidates`);
the result is the same as comparing every pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D, iou_2d
from napari_lesion_harvest.tracking.kalman import (
    BoxKalmanModel,
    boxes_to_measurements,
    states_to_boxes,
)
from napari_lesion_harvest.tracking.pairing import assign_pairs, overlap_candidates

#: The paper's t_G when harvesting: 2D boxes scoring below it are not stacked.
DEFAULT_SCORE_THRESHOLD = 0.1
#: A track continues with a box on the next slice when their IoU is greater than this.
DEFAULT_LINK_IOU = 0.8
#: Tracklets that share a slice after extension are fused when their IoU there is at least this.
DEFAULT_FUSE_IOU = 0.8
#: Slices by which every tracklet is extended up and down before fusion.
DEFAULT_EXTEND_SLICES = 1

#: Meta key of a proposal: per slice, the index of its box in that slice's
#: input arrays, or -1 on a slice that fusion bridged.
DETECTION_INDEX_KEY = "detection_index"


class ProposalInputError(ValueError):
    """The 2D boxes given for stacking are malformed; the message names volume, slice and box."""


# --------------------------------------------------------------------------- input


@dataclass(frozen=True)
class _Detections:
    """The kept 2D boxes of all volumes, one row each, sorted by (slice, volume).

    ``volume`` is the position of the volume in the input; ``index`` the
    position of the box in its slice's input arrays.
    """

    volume: np.ndarray
    slices: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    index: np.ndarray


def _slice_items(boxes_per_slice, where: str) -> list:
    if isinstance(boxes_per_slice, Mapping):
        return list(boxes_per_slice.items())
    if isinstance(boxes_per_slice, Sequence) and not isinstance(boxes_per_slice, str):
        return list(enumerate(boxes_per_slice))
    raise ProposalInputError(
        f"{where}boxes_per_slice must be a mapping or a sequence z -> (boxes, scores), "
        f"got {type(boxes_per_slice).__name__}"
    )


def _slice_arrays(z, value, where: str) -> tuple[int, np.ndarray, np.ndarray]:
    """Shape-check one slice's ``(boxes, scores)``; returns ``(z, boxes, scores)``."""
    if isinstance(z, bool) or not isinstance(z, int | np.integer):
        raise ProposalInputError(f"{where}slice keys must be integers, got {z!r}")
    if value is None:
        return int(z), np.zeros((0, 4)), np.zeros(0)
    try:
        boxes, scores = value
    except (TypeError, ValueError):
        raise ProposalInputError(f"{where}slice {z}: expected a pair (boxes, scores)") from None
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if boxes.size == 0 and scores.size == 0:
        return int(z), np.zeros((0, 4)), np.zeros(0)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ProposalInputError(
            f"{where}slice {z}: boxes must have shape (N, 4), got {boxes.shape}"
        )
    if scores.shape != (len(boxes),):
        raise ProposalInputError(
            f"{where}slice {z}: scores must have shape ({len(boxes)},), got {scores.shape}"
        )
    return int(z), boxes, scores


def _collect_detections(volumes: list, labels: list[str], score_threshold: float) -> _Detections:
    """Concatenate and validate every volume's boxes; keep those scoring ``>= score_threshold``."""
    volume_of, z_of, boxes, scores = [], [], [], []
    for number, (boxes_per_slice, label) in enumerate(zip(volumes, labels, strict=True)):
        for key, value in _slice_items(boxes_per_slice, label):
            z, slice_boxes, slice_scores = _slice_arrays(key, value, label)
            if len(slice_scores):
                volume_of.append(number)
                z_of.append(z)
                boxes.append(slice_boxes)
                scores.append(slice_scores)
    if not boxes:
        empty = np.zeros(0, dtype=np.int64)
        return _Detections(empty, empty, np.zeros((0, 4)), np.zeros(0), empty)
    counts = np.array([len(s) for s in scores], dtype=np.int64)
    volume = np.repeat(np.array(volume_of, dtype=np.int64), counts)
    slices = np.repeat(np.array(z_of, dtype=np.int64), counts)
    index = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    boxes, scores = np.concatenate(boxes), np.concatenate(scores)

    def fail(row: int, problem: str):
        raise ProposalInputError(
            f"{labels[volume[row]]}slice {slices[row]}: box {index[row]} "
            f"{boxes[row].tolist()} (score {scores[row]}) {problem}"
        )

    finite = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
    if not finite.all():
        fail(int(np.flatnonzero(~finite)[0]), "has a non-finite coordinate or score")
    keep = scores >= score_threshold
    degenerate = keep & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    if degenerate.any():
        fail(int(np.flatnonzero(degenerate)[0]), "needs x2 > x1 and y2 > y1")
    keep = np.flatnonzero(keep)
    order = keep[np.lexsort((volume[keep], slices[keep]))]
    return _Detections(volume[order], slices[order], boxes[order], scores[order], index[order])


# --------------------------------------------------------------------------- tracking


def _link_consecutive(dets: _Detections, link_iou: float, model: BoxKalmanModel) -> np.ndarray:
    """Tracker pass: ``previous[i]`` = the row linked to row ``i`` on slice ``z - 1``, or -1."""
    n = len(dets.slices)
    previous = np.full(n, -1, dtype=np.int64)
    measurements = boxes_to_measurements(dets.boxes)
    states = model.initial_states(measurements)  # posterior after each row's slice
    n_updates = np.zeros(n, dtype=np.int64)
    cut = np.flatnonzero(np.diff(dets.slices)) + 1
    starts = np.concatenate([[0], cut]).tolist()
    stops = np.concatenate([cut, [n]]).tolist()
    slice_values = dets.slices[starts].tolist()
    for i in range(1, len(starts)):
        if slice_values[i] != slice_values[i - 1] + 1:
            continue
        plo, phi, lo, hi = starts[i - 1], stops[i - 1], starts[i], stops[i]
        predicted = model.predict(states[plo:phi])
        predicted_boxes = states_to_boxes(predicted)
        track, det = overlap_candidates(
            dets.volume[plo:phi],
            predicted_boxes,
            dets.volume[lo:hi],
            dets.boxes[lo:hi],
            min_iou=link_iou,
        )
        if not len(track):
            continue
        iou = iou_2d(predicted_boxes[track], dets.boxes[lo + det], elementwise=True)
        admissible = np.flatnonzero(iou > link_iou)  # NaN (degenerate prediction) is False
        picked = admissible[assign_pairs(track[admissible], det[admissible], iou[admissible])]
        track, det = track[picked], lo + det[picked]
        states[det] = model.update(predicted[track], n_updates[plo + track], measurements[det])
        n_updates[det] = n_updates[plo + track] + 1
        previous[det] = plo + track
    return previous


def _fuse_across_gaps(
    dets: _Detections, previous: np.ndarray, fuse_iou: float, extend_slices: int
) -> np.ndarray:
    """Fusion pass: link tracklet ends to tracklet heads 1 .. ``2 * extend_slices`` slices on.

    Extended by ``extend_slices`` both ways, such a pair shares a slice, and on
    shared slices the extended boxes are the end and head boxes themselves,
    so their overlap is the IoU of those two boxes. Pairs with IoU
    ``>= fuse_iou`` are fused by maximum-IoU one-to-one assignment (each end
    and head at most once). Returns the updated copy of ``previous``.
    """
    previous = previous.copy()
    if extend_slices < 1 or not len(previous):
        return previous
    has_next = np.zeros(len(previous), dtype=bool)
    has_next[previous[previous >= 0]] = True
    heads, tails = np.flatnonzero(previous < 0), np.flatnonzero(~has_next)
    span = int(dets.slices.max() - dets.slices.min()) + 2 * extend_slices + 1
    key = dets.volume * span + (dets.slices - dets.slices.min())
    # Each tail once per step, keyed by the (volume, slice) of the heads it may reach.
    steps = np.arange(1, 2 * extend_slices + 1)
    tail_key = (key[tails][None, :] + steps[:, None]).ravel()
    tail_rows = np.tile(tails, len(steps))
    tail_pos, head_pos = overlap_candidates(
        tail_key, dets.boxes[tail_rows], key[heads], dets.boxes[heads], min_iou=fuse_iou
    )
    tail_rows, head_rows = tail_rows[tail_pos], heads[head_pos]
    iou = iou_2d(dets.boxes[tail_rows], dets.boxes[head_rows], elementwise=True)
    fusable = iou >= fuse_iou
    tail_rows, head_rows, iou = tail_rows[fusable], head_rows[fusable], iou[fusable]
    picked = assign_pairs(tail_rows, head_rows, iou)
    previous[head_rows[picked]] = tail_rows[picked]
    return previous


# --------------------------------------------------------------------------- proposals


def _chain_roots(previous: np.ndarray) -> np.ndarray:
    """For every row, the first row of its chain (pointer jumping over ``previous``)."""
    root = np.where(previous >= 0, previous, np.arange(len(previous)))
    while True:
        jumped = root[root]
        if np.array_equal(jumped, root):
            return root
        root = jumped


def _proposal(slices, boxes, scores, index) -> Proposal3D:
    """One chain's rows (sorted by slice) as a proposal; bridged slices are interpolated."""
    if slices[-1] - slices[0] + 1 > len(slices):
        full = np.arange(slices[0], slices[-1] + 1)
        at = np.searchsorted(full, slices)
        boxes = np.stack([np.interp(full, slices, boxes[:, k]) for k in range(4)], axis=1)
        filled_scores, filled_index = np.zeros(len(full)), np.full(len(full), -1, np.int64)
        filled_scores[at], filled_index[at] = scores, index
        slices, scores, index = full, filled_scores, filled_index
    return Proposal3D(slices, boxes, scores, meta={DETECTION_INDEX_KEY: index.tolist()})


def _build_proposals(dets: _Detections, previous: np.ndarray, n_volumes: int) -> list[list]:
    """Each volume's proposals, by decreasing ``s_g`` then first slice."""
    per_volume: list[list[Proposal3D]] = [[] for _ in range(n_volumes)]
    if not len(previous):
        return per_volume
    root = _chain_roots(previous)
    rows = np.lexsort((dets.slices, root))
    starts = np.flatnonzero(np.r_[True, np.diff(root[rows]) != 0])
    stops = np.r_[starts[1:], len(rows)]
    s_g = np.maximum.reduceat(dets.scores[rows], starts)
    first_rows = rows[starts]
    chain_order = np.lexsort((dets.slices[first_rows], -s_g, dets.volume[first_rows]))
    slices, boxes, scores, index = (
        a[rows] for a in (dets.slices, dets.boxes, dets.scores, dets.index)
    )
    volume = dets.volume[first_rows].tolist()
    starts, stops = starts.tolist(), stops.tolist()
    for c in chain_order.tolist():
        lo, hi = starts[c], stops[c]
        per_volume[volume[c]].append(
            _proposal(slices[lo:hi], boxes[lo:hi], scores[lo:hi], index[lo:hi])
        )
    return per_volume


def stack_proposals_batch(
    volumes,
    *,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    link_iou: float = DEFAULT_LINK_IOU,
    fuse_iou: float = DEFAULT_FUSE_IOU,
    extend_slices: int = DEFAULT_EXTEND_SLICES,
    model: BoxKalmanModel | None = None,
):
    """Stack the 2D lesion proposals of many volumes into 3D proposals.

    Volumes never interact; processing them together only shares the work
    of each slice index. Options as in :func:`stack_proposals`.

    Parameters
    ----------
    volumes : Mapping[str, boxes_per_slice] or Sequence[boxes_per_slice]
        One ``boxes_per_slice`` (see :func:`stack_proposals`) per volume,
        keyed by volume id or in order.

    Returns
    -------
    dict of str to list of Proposal3D, or list of list of Proposal3D
        Each volume's proposals, keyed or ordered like ``volumes``.
    """
    if not 0.0 <= link_iou <= 1.0 or not 0.0 <= fuse_iou <= 1.0:
        raise ValueError(f"IoU thresholds must lie in [0, 1]; got {link_iou} and {fuse_iou}")
    if extend_slices < 0:
        raise ValueError(f"extend_slices must be >= 0, got {extend_slices}")
    if isinstance(volumes, Mapping):
        keys, items = list(volumes), list(volumes.values())
        labels = [f"volume {key!r}: " for key in keys]
    else:
        keys, items = None, list(volumes)
        labels = [f"volume {number}: " for number in range(len(items))]
        labels = labels if len(items) != 1 else [""]
    dets = _collect_detections(items, labels, score_threshold)
    if len(dets.slices):
        model = model if model is not None else BoxKalmanModel()
        previous = _link_consecutive(dets, link_iou, model)
        previous = _fuse_across_gaps(dets, previous, fuse_iou, extend_slices)
        per_volume = _build_proposals(dets, previous, len(items))
    else:
        per_volume = [[] for _ in items]
    return per_volume if keys is None else dict(zip(keys, per_volume, strict=True))


def stack_proposals(
    boxes_per_slice,
    *,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    link_iou: float = DEFAULT_LINK_IOU,
    fuse_iou: float = DEFAULT_FUSE_IOU,
    extend_slices: int = DEFAULT_EXTEND_SLICES,
    model: BoxKalmanModel | None = None,
) -> list[Proposal3D]:
    """Stack one volume's 2D lesion proposals into 3D proposals.

    Parameters
    ----------
    boxes_per_slice : Mapping[int, (boxes, scores)] or Sequence[(boxes, scores)]
        For each slice ``z`` (0-based; a sequence's position is its ``z``) the
        LPG's 2D boxes, ``boxes`` of shape ``(N, 4)`` in ``xyxy`` pixel
        coordinates, and their objectness ``scores`` of shape ``(N,)``.
        ``None`` or empty arrays mean no box on that slice.
    score_threshold : float, optional
        The paper's t_G: only boxes with score ``>= score_threshold`` are
        stacked (0.1 when harvesting). Kept boxes need ``x2 > x1`` and
        ``y2 > y1``.
    link_iou : float, optional
        A track continues with a box on the next slice when the IoU of the
        track's Kalman-predicted box and that box is greater than this (0.8).
    fuse_iou : float, optional
        After extension, two tracklets that share a slice are fused when
        their boxes there have IoU of at least this (0.8).
    extend_slices : int, optional
        Slices by which each tracklet is extended up and down before fusion
        (1): gaps of up to ``2 * extend_slices - 1`` missed slices are
        bridged, and adjacent tracklets the tracker did not link are joined
        when their end boxes overlap enough. 0 disables fusion.
    model : BoxKalmanModel, optional
        The Kalman box model; pass one to many calls to reuse its gain table.

    Returns
    -------
    list of Proposal3D
        Sorted by decreasing ``s_g``, then by first slice. Each proposal spans
        consecutive slices; ``meta["detection_index"]`` gives, per slice, the
        index of its box in that slice's input arrays, or -1 on a slice that
        fusion bridged (interpolated box, score 0). Every kept input box
        belongs to exactly one proposal.

    Raises
    ------
    ProposalInputError
        On malformed input; the message names the slice and the box.

    Examples
    --------
    >>> import numpy as np
    >>> box = np.array([[10.0, 10.0, 30.0, 30.0]])
    >>> slices = {0: (box, [0.9]), 1: (box + 0.5, [0.8]), 3: (box, [0.7]), 4: (box, [0.05])}
    >>> [(p.slices.tolist(), p.s_g) for p in stack_proposals(slices)]
    [([0, 1, 2, 3], 0.9)]
    """
    return stack_proposals_batch(
        [boxes_per_slice],
        score_threshold=score_threshold,
        link_iou=link_iou,
        fuse_iou=fuse_iou,
        extend_slices=extend_slices,
        model=model,
    )[0]


def proposal_to_training_box(proposal: Proposal3D) -> tuple[int, np.ndarray]:
    """The 2D box on a proposal's highest-objectness slice, for fine-tuning the LPG.

    Returns
    -------
    z : int
        The slice with the highest 2D score (``proposal.best_slice``).
    box : ndarray, shape (4,)
        Its ``xyxy`` box (a copy).
    """
    return proposal.best_slice, np.array(proposal.best_box, dtype=np.float64)
