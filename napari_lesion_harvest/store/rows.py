"""The store's SQL side: statements, conversions between SQL rows and the records of
:mod:`~napari_lesion_harvest.store.records` (marks, volumes, proposals, audit), and the
checks a value passes before it is written.

Proposal tracklets are stored compactly: slices as little-endian int32,
boxes ``(K, 4)`` and scores ``(K,)`` as little-endian float32 blobs.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Mapping
from pathlib import PurePath

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D, RecistMark
from napari_lesion_harvest.store.errors import InvalidValueError, NotFoundError
from napari_lesion_harvest.store.records import (
    AuditEntry,
    ProposalRow,
    StoredMark,
    StoredProposal,
    StoredVerdict,
    VolumeRecord,
)
from napari_lesion_harvest.store.schema import ORIGINS, ROLES, SPLITS, VERDICTS

MARK_COORDS = "long_x1, long_y1, long_x2, long_y2, short_x1, short_y1, short_x2, short_y2"
MARK_COORD_NAMES = tuple(MARK_COORDS.split(", "))
#: How far (pixels) a mark's endpoint may lie beyond the centres of the image's border
#: pixels: half a pixel, the image's outer edge.
MARK_BORDER_TOLERANCE_PX = 0.5
#: Slices and pixels allowed along each axis of a volume whose shape is not known.
UNKNOWN_EXTENT = 65_536
#: Two marks of one volume and slice are the same mark when every coordinate agrees
#: within this many pixels (float round-off through a file).
MARK_MATCH_TOLERANCE_PX = 1e-4
MARK_SELECT = (
    f"SELECT m.id, v.name, m.z, {', '.join('m.' + c for c in MARK_COORDS.split(', '))}, "
    "m.origin, m.author, m.created_at, m.edited_at, m.deleted_at "
    "FROM marks m JOIN volumes v ON v.id = m.volume_id"
)
VOLUME_SELECT = (
    "SELECT name, reader, path, split, shape_z, shape_y, shape_x, spacing_z, spacing_y, "
    "spacing_x, window_low, window_high, complete, completed_by, completed_at, "
    "imported_split, attributes FROM volumes"
)
PROPOSAL_SELECT = (
    "SELECT p.id, r.number, v.name, p.role, p.s_g, p.s_c, p.s_gc, p.stage, "
    "p.x1, p.y1, p.z1, p.x2, p.y2, p.z2, p.slices, p.boxes, p.scores, p.meta, "
    "d.verdict, d.author, d.at "
    "FROM proposals p JOIN rounds r ON r.id = p.round_id JOIN volumes v ON v.id = p.volume_id "
    "LEFT JOIN verdicts d ON d.proposal_id = p.id"
)
PROPOSAL_INSERT = (
    "INSERT INTO proposals (round_id, volume_id, stage, role, x1, y1, z1, x2, y2, z2, "
    "s_g, s_c, s_gc, n_slices, slices, boxes, scores, meta) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def check_choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    """Return ``value`` or raise :class:`InvalidValueError` listing the allowed values."""
    if value not in allowed:
        raise InvalidValueError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def check_split(split: str) -> str:
    """Validate a split name."""
    return check_choice(split, SPLITS, "split")


def check_origin(origin: str) -> str:
    """Validate a mark origin."""
    return check_choice(origin, ORIGINS, "mark origin")


def check_role(role: str) -> str:
    """Validate a proposal role."""
    return check_choice(role, ROLES, "proposal role")


def check_verdict(verdict: str) -> str:
    """Validate a verdict."""
    return check_choice(verdict, VERDICTS, "verdict")


def now() -> float:
    """Current time, POSIX seconds."""
    return time.time()


# ----------------------------------------------------------------------- volumes


def volume_pk(conn: sqlite3.Connection, volume_id: str) -> int:
    """Primary key of a volume; :class:`NotFoundError` when the project has no such volume."""
    row = conn.execute("SELECT id FROM volumes WHERE name = ?", (volume_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"the project has no volume {volume_id!r}")
    return int(row[0])


def volume_pks(conn: sqlite3.Connection) -> dict[str, int]:
    """Every volume's primary key by name."""
    return dict(conn.execute("SELECT name, id FROM volumes"))


_VOLUME_SELECT_WITH_PK = VOLUME_SELECT.replace("SELECT ", "SELECT id, ", 1)


def stored_volume(conn: sqlite3.Connection, volume_id: str) -> tuple[int, VolumeRecord]:
    """Primary key and record of a volume; :class:`NotFoundError` when unknown."""
    row = conn.execute(f"{_VOLUME_SELECT_WITH_PK} WHERE name = ?", (volume_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"the project has no volume {volume_id!r}")
    return int(row[0]), row_to_volume(row[1:])


def stored_volumes(conn: sqlite3.Connection) -> dict[str, tuple[int, VolumeRecord]]:
    """Every volume's primary key and record, by volume id."""
    return {
        row[1]: (int(row[0]), row_to_volume(row[1:]))
        for row in conn.execute(_VOLUME_SELECT_WITH_PK)
    }


def volume_values(record: VolumeRecord) -> tuple:
    """SQL values of a volume for ``INSERT`` (order of :data:`VOLUME_SELECT`)."""
    check_split(record.split)
    shape = tuple(int(n) for n in record.shape) if record.shape is not None else (None,) * 3
    spacing = (
        tuple(float(s) for s in record.spacing) if record.spacing is not None else (None,) * 3
    )
    window = (
        tuple(float(w) for w in record.display_window)
        if record.display_window is not None
        else (None, None)
    )
    imported = check_split(record.imported_split or record.split)
    return (
        record.volume_id,
        record.reader,
        str(record.path),
        record.split,
        *shape,
        *spacing,
        *window,
        int(bool(record.complete)),
        record.completed_by,
        record.completed_at,
        imported,
        json.dumps(dict(record.attributes)),
    )


def volume_differences(stored: VolumeRecord, new: VolumeRecord) -> list[str]:
    """How a volume being added differs from the stored volume of the same id.

    Compares what identifies the data (reader, path, shape, spacing); the split,
    display window and completion may change after an import.

    Returns
    -------
    list of str
        One ``"field: <stored> in the project, <new> now"`` per difference (empty:
        the same volume).
    """
    return [
        f"{name} {_plain(getattr(stored, name))!r} in the project, "
        f"{_plain(getattr(new, name))!r} now"
        for name in ("reader", "path", "shape", "spacing")
        if not _same_field(getattr(stored, name), getattr(new, name))
    ]


def _plain(value):
    """A field for messages: text as text, numbers as built-in numbers."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, PurePath):
        return str(value)
    return tuple(v.item() if isinstance(v, np.generic) else v for v in value)


def _same_field(before, after) -> bool:
    if before is None or after is None:
        return before is None and after is None
    if isinstance(before, str | PurePath) or isinstance(after, str | PurePath):
        return str(before) == str(after)
    return len(before) == len(after) and all(
        math.isclose(a, b, rel_tol=1e-9) for a, b in zip(before, after, strict=True)
    )


def row_to_volume(row: tuple) -> VolumeRecord:
    """Build a :class:`VolumeRecord` from a :data:`VOLUME_SELECT` row."""
    (name, reader, path, split, sz, sy, sx, pz, py, px, lo, hi) = row[:12]
    complete, completed_by, completed_at, imported, attributes = row[12:]
    return VolumeRecord(
        volume_id=name,
        reader=reader,
        path=path,
        split=split,
        shape=(sz, sy, sx) if sz is not None else None,
        spacing=(pz, py, px) if pz is not None else None,
        display_window=(lo, hi) if lo is not None else None,
        complete=bool(complete),
        completed_by=completed_by,
        completed_at=completed_at,
        imported_split=imported,
        attributes=json.loads(attributes),
    )


# ------------------------------------------------------------------------- marks


def mark_values(mark: RecistMark) -> tuple:
    """``(z, 8 coordinates)`` of a mark: long axis x1 y1 x2 y2, short axis x1 y1 x2 y2."""
    if not isinstance(mark, RecistMark):
        raise InvalidValueError(f"expected a geometry.RecistMark, got {type(mark).__name__}")
    return (mark.z, *(float(v) for v in mark.measurement_coordinates()))


def checked_mark_values(
    mark: RecistMark, shape: tuple[int, int, int] | None, *, volume_id: str, where: str
) -> tuple:
    """:func:`mark_values` of a mark that lies inside its volume.

    The slice ``z`` must be in ``[0, Z)`` and every endpoint on the image:
    pixel coordinates are pixel centres, so ``x`` in ``[-0.5, X - 0.5]`` and
    ``y`` in ``[-0.5, Y - 0.5]`` (:data:`MARK_BORDER_TOLERANCE_PX` beyond the
    border pixels' centres). A volume of unknown shape allows
    :data:`UNKNOWN_EXTENT` slices and pixels.

    Parameters
    ----------
    mark : RecistMark
    shape : tuple of int or None
        The volume's ``(Z, Y, X)``, None when unknown.
    volume_id : str
    where : str
        The mark in error messages (``"new mark"``, ``"mark 12"``,
        ``"marks.csv, line 7"``): ``"<where>: volume 'v1', field z = 40 is outside
        its 30 slices (0 to 29)"``.

    Raises
    ------
    InvalidValueError
        Naming ``where``, the volume and the field out of range.
    """
    values = mark_values(mark)
    known = shape is not None
    size_z, size_y, size_x = shape if known else (UNKNOWN_EXTENT,) * 3
    what = f"{where}: volume {volume_id!r},"
    if not 0 <= values[0] < size_z:
        extent = f"its {size_z} slices (0 to {size_z - 1})" if known else _unknown_extent()
        raise InvalidValueError(f"{what} field z = {values[0]} is outside {extent}")
    for name, value in zip(MARK_COORD_NAMES, values[1:], strict=True):
        size = size_x if name[-2] == "x" else size_y
        low, high = -MARK_BORDER_TOLERANCE_PX, size - 1 + MARK_BORDER_TOLERANCE_PX
        if not low <= value <= high:
            axis = name[-2]
            extent = f"the image ({axis} from {low:g} to {high:g})" if known else _unknown_extent()
            raise InvalidValueError(f"{what} field {name} = {value:g} is outside {extent}")
    return values


def _unknown_extent() -> str:
    return f"0 to {UNKNOWN_EXTENT} (the volume's shape is not known)"


def same_mark_values(a: tuple, b: tuple) -> bool:
    """Whether two :func:`mark_values` are the same mark: same slice and every coordinate
    within :data:`MARK_MATCH_TOLERANCE_PX`."""
    return a[0] == b[0] and all(
        abs(x - y) <= MARK_MATCH_TOLERANCE_PX for x, y in zip(a[1:], b[1:], strict=True)
    )


def values_to_mark(values) -> RecistMark:
    """Inverse of :func:`mark_values`."""
    return RecistMark.from_measurement_coordinates(values[1:9], z=int(values[0]))


def row_to_mark(row: tuple) -> StoredMark:
    """Build a :class:`StoredMark` from a :data:`MARK_SELECT` row."""
    return StoredMark(
        id=row[0],
        volume_id=row[1],
        mark=values_to_mark(row[2:11]),
        origin=row[11],
        author=row[12],
        created_at=row[13],
        edited_at=row[14],
        deleted_at=row[15],
    )


def fetch_mark(conn: sqlite3.Connection, mark_id: int) -> StoredMark:
    """One mark by id (deleted or not); :class:`NotFoundError` when unknown."""
    row = conn.execute(f"{MARK_SELECT} WHERE m.id = ?", (int(mark_id),)).fetchone()
    if row is None:
        raise NotFoundError(f"the project has no mark with id {mark_id}")
    return row_to_mark(row)


# --------------------------------------------------------------------- proposals


def proposal_values(
    chunk: list[ProposalRow],
    *,
    round_pk: int,
    volume_pks_: dict[str, int],
    stage: str,
    first_index: int = 0,
) -> list[tuple]:
    """SQL values of a batch of proposals for :data:`PROPOSAL_INSERT`.

    The 3D boxes, ``s_g`` and the float32/int32 blobs are computed for the
    whole batch at once (``reduceat`` over the concatenated tracklets), which
    keeps a DeepLesion-scale stage (10^6 boxes) within seconds.

    Parameters
    ----------
    chunk : list of ProposalRow
    round_pk : int
    volume_pks_ : dict of str to int
        Volume primary keys by volume id.
    stage : str
    first_index : int, optional
        Position of ``chunk[0]`` in the stage (for error messages).
    """
    for offset, row in enumerate(chunk):
        where = f"proposal {first_index + offset} of stage {stage}"
        if not isinstance(row.proposal, Proposal3D):
            raise InvalidValueError(
                f"{where}: expected a geometry.Proposal3D, got {type(row.proposal).__name__}"
            )
        if row.volume_id not in volume_pks_:
            raise NotFoundError(f"{where}: the project has no volume {row.volume_id!r}")
        check_role(row.role)
    lengths = np.array([len(row.proposal.slices) for row in chunk])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    slices = np.concatenate([row.proposal.slices for row in chunk])
    boxes = np.concatenate([row.proposal.boxes for row in chunk])
    scores = np.concatenate([row.proposal.scores for row in chunk])
    lo = np.minimum.reduceat(boxes[:, :2], starts, axis=0)
    hi = np.maximum.reduceat(boxes[:, 2:], starts, axis=0)
    box_3d = np.column_stack(
        [lo, np.minimum.reduceat(slices, starts), hi, np.maximum.reduceat(slices, starts)]
    ).tolist()
    s_g = np.maximum.reduceat(scores, starts).tolist()
    slice_bytes = slices.astype("<i4").tobytes()
    box_bytes = boxes.astype("<f4").tobytes()
    score_bytes = scores.astype("<f4").tobytes()
    values = []
    for i, (row, start, k) in enumerate(
        zip(chunk, starts.tolist(), lengths.tolist(), strict=True)
    ):
        meta = row.proposal.meta
        values.append(
            (
                round_pk,
                volume_pks_[row.volume_id],
                stage,
                row.role,
                *box_3d[i],
                s_g[i],
                _optional_float(row.s_c),
                _optional_float(row.s_gc),
                k,
                slice_bytes[4 * start : 4 * (start + k)],
                box_bytes[16 * start : 16 * (start + k)],
                score_bytes[4 * start : 4 * (start + k)],
                json.dumps(meta) if meta else None,
            )
        )
    return values


def row_to_proposal(row: tuple) -> StoredProposal:
    """Build a :class:`StoredProposal` from a :data:`PROPOSAL_SELECT` row."""
    (pid, number, volume, role, s_g, s_c, s_gc, stage) = row[:8]
    box_3d = tuple(row[8:14])
    slices, boxes, scores, meta, verdict, author, at = row[14:]
    proposal = Proposal3D(
        slices=np.frombuffer(slices, dtype="<i4"),
        boxes=np.frombuffer(boxes, dtype="<f4").reshape(-1, 4),
        scores=np.frombuffer(scores, dtype="<f4"),
        meta=json.loads(meta) if meta else {},
    )
    return StoredProposal(
        id=pid,
        round_number=number,
        volume_id=volume,
        proposal=proposal,
        role=role,
        s_g=s_g,
        s_c=s_c,
        s_gc=s_gc,
        stage=stage,
        box_3d=box_3d,
        verdict=StoredVerdict(pid, verdict, author, at) if verdict is not None else None,
    )


def fetch_proposal(conn: sqlite3.Connection, proposal_id: int) -> StoredProposal:
    """One proposal by id; :class:`NotFoundError` when unknown."""
    row = conn.execute(f"{PROPOSAL_SELECT} WHERE p.id = ?", (int(proposal_id),)).fetchone()
    if row is None:
        raise NotFoundError(f"the project has no proposal with id {proposal_id}")
    return row_to_proposal(row)


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


# ------------------------------------------------------------------------- audit


AUDIT_SELECT = (
    "SELECT a.id, a.at, a.author, a.action, v.name, a.target_id, a.details "
    "FROM audit a LEFT JOIN volumes v ON v.id = a.volume_id"
)


def row_to_audit(row: tuple) -> AuditEntry:
    """Build an :class:`AuditEntry` from an :data:`AUDIT_SELECT` row."""
    return AuditEntry(*row[:6], details=json.loads(row[6]))


def append_audit(
    conn: sqlite3.Connection,
    *,
    author: str,
    action: str,
    volume_pk_: int | None = None,
    target_id: int | None = None,
    details: Mapping | None = None,
    at: float | None = None,
) -> int:
    """Append one entry to the audit log (inside the caller's transaction); returns its id."""
    if not author:
        raise InvalidValueError(f"{action} needs an author (who did it)")
    cursor = conn.execute(
        "INSERT INTO audit (at, author, action, volume_id, target_id, details) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            at if at is not None else now(),
            author,
            action,
            volume_pk_,
            target_id,
            json.dumps(dict(details or {})),
        ),
    )
    return int(cursor.lastrowid)
