"""Reading truth and detections for evaluation from the supported files.

Truth
    * the paper's 2D RECIST-box pickles (``Revised-*.pkl``, ``RECIST-Box-*.pkl``)
      -> :class:`~.tables.RecistTruth`; its keys are the test set;
    * ``3D-Box.pkl`` -> :class:`~.tables.BoxTruth3D`;
    * our marks CSV / JSON -> RecistTruth (the volumes that have marks);
    * our lesions CSV / JSON -> BoxTruth3D (each lesion's enclosing box).

Detections
    * a ``MinedLesions.pkl``-layout pickle or our lesions CSV / JSON
      (per-slice tracklets with scores);
    * a 2D RECIST-box pickle or our marks CSV / JSON: each mark becomes a
      one-slice detection with score 1 (the original marks as a baseline);
    * ``3D-Box.pkl``: each box becomes a tracklet with the same 2D box on
      every slice of its range, score 1.

Every reader is strict: a bad row or record raises
:class:`~napari_lesion_harvest.io.errors.FormatError` naming the file and row.
"""

from __future__ import annotations

from collections.abc import Callable
from os import PathLike
from pathlib import Path

import numpy as np

from napari_lesion_harvest.evaluation.tables import BoxTruth3D, RecistTruth
from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.io.annotations import read_lesions, read_marks
from napari_lesion_harvest.io.errors import FormatError
from napari_lesion_harvest.io.paper_pickles import (
    read_3d_box_pickle,
    read_mined_lesions_pickle,
    read_recist_box_pickle,
)

#: Score given to marks or boxes read as detections (they have none).
UNSCORED_DETECTION_SCORE = 1.0


def _first_that_reads(path: Path, readers: list[tuple[str, Callable]]):
    """Apply the readers in turn; return ``(kind, value)`` of the first that accepts the file."""
    reasons = []
    for kind, reader in readers:
        try:
            return kind, reader(path)
        except FormatError as error:
            reasons.append(f"as {kind}: {error}")
    raise FormatError(path, "not a supported file; tried " + "; ".join(reasons))


def _marks_by_volume(path: Path) -> dict[str, list]:
    records, _ = read_marks(path, strict=True)
    grouped: dict[str, list] = {}
    for record in records:
        grouped.setdefault(record.volume_id, []).append(record.mark)
    return grouped


def _lesions(path: Path) -> dict[str, list[Proposal3D]]:
    return read_lesions(path, strict=True)[0]


def _truth_readers(path: Path) -> list[tuple[str, Callable]]:
    if path.suffix.lower() == ".pkl":
        return [("RECIST boxes", read_recist_box_pickle), ("3D boxes", read_3d_box_pickle)]
    return [("marks", _marks_by_volume), ("lesions", _lesions)]


def read_truth(path: str | PathLike) -> RecistTruth | BoxTruth3D:
    """Read a truth file: RECIST boxes / marks -> RecistTruth, 3D boxes / lesions -> BoxTruth3D."""
    path = Path(path)
    kind, value = _first_that_reads(path, _truth_readers(path))
    if kind in ("RECIST boxes", "marks"):
        return RecistTruth.from_mapping(value)
    if kind == "lesions":
        value = {v: [p.box_3d for p in plist] for v, plist in value.items()}
    return BoxTruth3D.from_mapping(value)


def _single_slice(slices, boxes) -> list[Proposal3D]:
    return [
        Proposal3D([z], [box], [UNSCORED_DETECTION_SCORE])
        for z, box in zip(slices, boxes, strict=True)
    ]


def read_detections(path: str | PathLike) -> dict[str, list[Proposal3D]]:
    """Read detections as ``{volume_id: [Proposal3D, ...]}`` (see the module docstring)."""
    path = Path(path)
    if path.suffix.lower() == ".pkl":
        readers = [
            ("tracklets", read_mined_lesions_pickle),
            ("RECIST boxes", read_recist_box_pickle),
            ("3D boxes", read_3d_box_pickle),
        ]
    else:
        readers = [("lesions", _lesions), ("marks", _marks_by_volume)]
    kind, value = _first_that_reads(path, readers)
    if kind in ("tracklets", "lesions"):
        return value
    if kind == "RECIST boxes":
        return {v: _single_slice(b.slices, b.boxes) for v, b in value.items()}
    if kind == "marks":
        return {
            v: _single_slice([m.z for m in ms], [m.box() for m in ms]) for v, ms in value.items()
        }
    return {v: [_box_tracklet(box) for box in boxes] for v, boxes in value.items()}


def _box_tracklet(box_xyzxyz) -> Proposal3D:
    x1, y1, z1, x2, y2, z2 = np.asarray(box_xyzxyz, dtype=np.float64)
    slices = np.arange(int(z1), int(z2) + 1)
    return Proposal3D(
        slices,
        np.tile([x1, y1, x2, y2], (len(slices), 1)),
        np.full(len(slices), UNSCORED_DETECTION_SCORE),
    )
