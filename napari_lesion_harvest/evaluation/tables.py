"""Column tables of a test set's truth and detections, the input of every metric.

A metric looks at all volumes of a test set at once, so the per-volume
records (:class:`~napari_lesion_harvest.geometry.Proposal3D` lists, RECIST
boxes per slice, 3D boxes) are flattened once into flat arrays with a volume
index per row. The test set is the truth's volume list: a volume without
lesions still counts (its detections are all false positives), and so does a
volume without detections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D, RecistMark, as_boxes


def _volume_index(volume_ids: Sequence[str]) -> dict[str, int]:
    index = {str(volume_id): i for i, volume_id in enumerate(volume_ids)}
    if len(index) != len(volume_ids):
        raise ValueError("the test set lists a volume id more than once")
    return index


def _readonly(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Read-only views (the caller's own arrays keep their flags)."""
    views = tuple(array.view() for array in arrays)
    for view in views:
        view.setflags(write=False)
    return views


def _slice_boxes(value, volume_id: str) -> tuple[np.ndarray, np.ndarray]:
    """``(z (M,), boxes (M, 4))`` from a ``SliceBoxes``-like, a pair, or RecistMarks."""
    if hasattr(value, "slices") and hasattr(value, "boxes"):
        z, boxes = value.slices, value.boxes
    elif isinstance(value, Sequence) and value and all(isinstance(v, RecistMark) for v in value):
        z = [mark.z for mark in value]
        boxes = [mark.box() for mark in value]
    elif isinstance(value, Sequence) and len(value) in (0, 2):
        z, boxes = value if value else ((), ())
    else:
        raise TypeError(
            f"volume {volume_id}: expected (slices, boxes), an object with .slices/.boxes, "
            f"or a list of RecistMark; got {type(value).__name__}"
        )
    z = np.asarray(z, dtype=np.float64).ravel()
    boxes = as_boxes(boxes)
    if len(z) != len(boxes):
        raise ValueError(f"volume {volume_id}: {len(z)} slice indices for {len(boxes)} boxes")
    if not np.all(np.isfinite(boxes)) or not np.all(z == np.round(z)):
        raise ValueError(f"volume {volume_id}: non-finite box or non-integer slice index")
    return z.astype(np.int64), boxes


@dataclass(frozen=True)
class RecistTruth:
    """RECIST boxes of a test set: one 2D box on one slice per lesion.

    Attributes
    ----------
    volume_ids : tuple of str, length V
        The test set, in a fixed order.
    volume : ndarray of int64, shape (M,)
        Index into ``volume_ids`` of each lesion.
    z : ndarray of int64, shape (M,)
        Slice (0-based in the volume) carrying the mark.
    boxes : ndarray, shape (M, 4)
        ``xyxy`` box of the mark (the RECIST endpoints padded by 5 px).
    """

    volume_ids: tuple[str, ...]
    volume: np.ndarray
    z: np.ndarray
    boxes: np.ndarray

    @classmethod
    def from_mapping(cls, marks: Mapping[str, object]) -> RecistTruth:
        """Build from ``{volume_id: marks}``; every key is a test volume.

        Parameters
        ----------
        marks : mapping of str to marks
            Per volume, any of: an object with ``.slices`` (M,) and ``.boxes``
            (M, 4) (``io.paper_pickles.SliceBoxes``); a pair ``(slices, boxes)``;
            a list of :class:`~napari_lesion_harvest.geometry.RecistMark`
            (boxed with :meth:`RecistMark.box`). An empty value is a volume
            without lesions.
        """
        volume_ids = tuple(str(v) for v in marks)
        _volume_index(volume_ids)
        parts = [_slice_boxes(marks[key], str(key)) for key in marks]
        counts = [len(z) for z, _ in parts]
        volume = np.repeat(np.arange(len(volume_ids), dtype=np.int64), counts)
        z = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        boxes = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 4))
        volume, z, boxes = _readonly(volume, z, boxes)
        return cls(volume_ids, volume, z, boxes)

    @property
    def n_lesions(self) -> int:
        return len(self.volume)


@dataclass(frozen=True)
class BoxTruth3D:
    """3D lesion boxes of a test set (the paper's ``3D-Box.pkl`` truth).

    Attributes
    ----------
    volume_ids : tuple of str, length V
    volume : ndarray of int64, shape (M,)
    boxes : ndarray, shape (M, 6)
        ``xyzxyz`` boxes ``(x1, y1, z1, x2, y2, z2)``, inclusive slice range.
    """

    volume_ids: tuple[str, ...]
    volume: np.ndarray
    boxes: np.ndarray

    @classmethod
    def from_mapping(cls, boxes: Mapping[str, object]) -> BoxTruth3D:
        """Build from ``{volume_id: array_like (M, 6) xyzxyz}``."""
        volume_ids = tuple(str(v) for v in boxes)
        _volume_index(volume_ids)
        arrays = [as_boxes(value, 6) for value in boxes.values()]
        for vid, array in zip(volume_ids, arrays, strict=True):
            if not np.all(np.isfinite(array)):
                raise ValueError(f"volume {vid}: non-finite 3D box")
        volume = np.repeat(np.arange(len(volume_ids), dtype=np.int64), [len(a) for a in arrays])
        stacked = np.concatenate(arrays) if arrays else np.zeros((0, 6))
        volume, stacked = _readonly(volume, stacked)
        return cls(volume_ids, volume, stacked)

    @property
    def n_lesions(self) -> int:
        return len(self.volume)


@dataclass(frozen=True)
class ProposalTable:
    """The 3D proposals of a test set, one row per (proposal, slice).

    Attributes
    ----------
    volume_ids : tuple of str, length V
        The test set (the truth's volume list).
    proposal_volume : ndarray of int64, shape (P,)
        Index into ``volume_ids`` of each proposal.
    proposal_score : ndarray, shape (P,)
        Confidence of each proposal: its highest per-slice score (``s_g``).
    slice_proposal : ndarray of int64, shape (S,)
        Proposal of each per-slice row.
    slice_z : ndarray of int64, shape (S,)
    slice_boxes : ndarray, shape (S, 4)
        ``xyxy`` box of the proposal on slice ``slice_z``.
    slice_scores : ndarray, shape (S,)
    """

    volume_ids: tuple[str, ...]
    proposal_volume: np.ndarray
    proposal_score: np.ndarray
    slice_proposal: np.ndarray
    slice_z: np.ndarray
    slice_boxes: np.ndarray
    slice_scores: np.ndarray

    @property
    def n_proposals(self) -> int:
        return len(self.proposal_volume)

    @classmethod
    def from_slices(
        cls,
        volume_ids: Sequence[str],
        proposal_volume,
        slice_proposal,
        slice_z,
        slice_boxes,
        slice_scores,
    ) -> ProposalTable:
        """Build from flat per-slice arrays (the fast path; no per-proposal Python objects).

        Parameters
        ----------
        volume_ids : sequence of str, length V
        proposal_volume : array_like of int, shape (P,)
            Volume index of each proposal, in ``[0, V)``.
        slice_proposal : array_like of int, shape (S,)
            Proposal index of each row, in ``[0, P)``; every proposal needs a row.
        slice_z : array_like of int, shape (S,)
        slice_boxes : array_like, shape (S, 4)
        slice_scores : array_like, shape (S,)

        Notes
        -----
        When a proposal has two rows on one slice, only the first is kept, as
        in the released evaluation (which takes the first box it finds on
        the slice).
        """
        volume_ids = tuple(str(v) for v in volume_ids)
        _volume_index(volume_ids)
        proposal_volume = np.asarray(proposal_volume, dtype=np.int64).ravel()
        slice_proposal = np.asarray(slice_proposal, dtype=np.int64).ravel()
        slice_z = np.asarray(slice_z, dtype=np.int64).ravel()
        slice_boxes = as_boxes(slice_boxes)
        slice_scores = np.asarray(slice_scores, dtype=np.float64).ravel()
        n_rows = len(slice_proposal)
        if not (len(slice_z) == len(slice_boxes) == len(slice_scores) == n_rows):
            raise ValueError(
                f"per-slice arrays differ in length: proposal {n_rows}, z {len(slice_z)}, "
                f"boxes {len(slice_boxes)}, scores {len(slice_scores)}"
            )
        n_proposals = len(proposal_volume)
        if n_proposals and (proposal_volume.min() < 0 or proposal_volume.max() >= len(volume_ids)):
            raise ValueError("proposal_volume holds an index outside the test set")
        if n_rows and (slice_proposal.min() < 0 or slice_proposal.max() >= n_proposals):
            raise ValueError("slice_proposal holds an index outside the proposal list")
        if not (np.all(np.isfinite(slice_boxes)) and np.all(np.isfinite(slice_scores))):
            bad = np.flatnonzero(~np.isfinite(np.c_[slice_boxes, slice_scores]).all(axis=1))[0]
            raise ValueError(f"per-slice row {bad} has a non-finite box or score")
        rows_per_proposal = np.bincount(slice_proposal, minlength=n_proposals)
        if np.any(rows_per_proposal == 0):
            missing = int(np.flatnonzero(rows_per_proposal == 0)[0])
            raise ValueError(f"proposal {missing} has no per-slice box")
        # Order rows by proposal then z (tracker output already is: no sort, no copy).
        same_proposal = slice_proposal[1:] == slice_proposal[:-1]
        ordered = (slice_proposal[1:] > slice_proposal[:-1]) | (
            same_proposal & (slice_z[1:] >= slice_z[:-1])
        )
        if not np.all(ordered):
            order = np.lexsort((np.arange(n_rows), slice_z, slice_proposal))
            slice_proposal, slice_z = slice_proposal[order], slice_z[order]
            slice_boxes, slice_scores = slice_boxes[order], slice_scores[order]
            same_proposal = slice_proposal[1:] == slice_proposal[:-1]
        # The confidence is the highest score over all rows of the proposal.
        proposal_score = np.zeros(0)
        if n_rows:
            starts = np.flatnonzero(np.r_[True, ~same_proposal])
            proposal_score = np.maximum.reduceat(slice_scores, starts)
        # Of rows repeating a (proposal, z), keep the first.
        repeated = same_proposal & (slice_z[1:] == slice_z[:-1])
        if np.any(repeated):
            keep = np.flatnonzero(~np.r_[False, repeated])
            slice_proposal, slice_z = slice_proposal[keep], slice_z[keep]
            slice_boxes, slice_scores = slice_boxes[keep], slice_scores[keep]
        proposal_volume, proposal_score, slice_proposal, slice_z = _readonly(
            proposal_volume, proposal_score, slice_proposal, slice_z
        )
        slice_boxes, slice_scores = _readonly(slice_boxes, slice_scores)
        return cls(
            volume_ids,
            proposal_volume,
            proposal_score,
            slice_proposal,
            slice_z,
            slice_boxes,
            slice_scores,
        )

    @classmethod
    def from_proposals(
        cls,
        detections: Mapping[str, Sequence[Proposal3D]],
        volume_ids: Sequence[str],
    ) -> ProposalTable:
        """Build from ``{volume_id: [Proposal3D, ...]}`` over the test set ``volume_ids``.

        Volumes of the test set missing from ``detections`` have no
        detections. A volume in ``detections`` that is not in the test set is
        an error (its lesions are unknown, so its detections cannot be judged).
        """
        index = _volume_index(tuple(str(v) for v in volume_ids))
        unknown = [str(v) for v in detections if str(v) not in index]
        if unknown:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise ValueError(
                f"{len(unknown)} detection volume(s) are not in the test set: {shown}"
            )
        proposals = [(index[str(v)], p) for v, plist in detections.items() for p in plist]
        counts = np.array([len(p.slices) for _, p in proposals], dtype=np.int64)
        proposal_volume = np.array([v for v, _ in proposals], dtype=np.int64)
        if proposals:
            slice_z = np.concatenate([p.slices for _, p in proposals])
            slice_boxes = np.concatenate([p.boxes for _, p in proposals])
            slice_scores = np.concatenate([p.scores for _, p in proposals])
        else:
            slice_z, slice_boxes, slice_scores = np.zeros(0), np.zeros((0, 4)), np.zeros(0)
        slice_proposal = np.repeat(np.arange(len(proposals)), counts)
        return cls.from_slices(
            volume_ids, proposal_volume, slice_proposal, slice_z, slice_boxes, slice_scores
        )

    def proposal_boxes_3d(self) -> np.ndarray:
        """Enclosing ``xyzxyz`` box of every proposal, shape ``(P, 6)``."""
        if self.n_proposals == 0:
            return np.zeros((0, 6))
        # Rows are sorted by proposal, and every proposal has at least one row.
        starts = np.flatnonzero(np.r_[True, self.slice_proposal[1:] != self.slice_proposal[:-1]])
        lo = np.minimum.reduceat(np.c_[self.slice_boxes[:, :2], self.slice_z], starts)
        hi = np.maximum.reduceat(np.c_[self.slice_boxes[:, 2:], self.slice_z], starts)
        return np.c_[lo, hi]
