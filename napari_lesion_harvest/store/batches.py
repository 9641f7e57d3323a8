"""Data entry in one transaction: volumes, marks, splits and completions of a :class:`DataBatch`.

The functions here run inside a write transaction of the caller
(:meth:`HarvestProject.add_batch`, and the single-item methods of
:class:`~napari_lesion_harvest.store.project.HarvestProject` that share them);
any error raised rolls the whole transaction back.

Re-running a batch changes nothing: a volume already in the project with the
same data is left as it is (with other data it is an error naming it), a mark
equal to a live mark of the same volume, slice and origin is not added twice,
and a mark equal to a soft-deleted one stays deleted (the expert's deletion
outranks the file; restore it by id).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Sequence

from napari_lesion_harvest.store import rows
from napari_lesion_harvest.store.errors import InvalidValueError, NotFoundError
from napari_lesion_harvest.store.records import BatchResult, DataBatch, MarkEntry, VolumeRecord
from napari_lesion_harvest.vocabulary import Split

#: Held-out splits: completing such a volume would move test data into training.
HELD_OUT_SPLITS = (Split.V_H_test, Split.V_D_test)

_Volumes = dict[str, tuple[int, VolumeRecord]]


def write_batch(conn: sqlite3.Connection, batch: DataBatch, *, author: str) -> BatchResult:
    """Write ``batch`` inside the caller's write transaction (``conn``); what it returns
    and raises: :meth:`~napari_lesion_harvest.store.HarvestProject.add_batch`."""
    rows.check_origin(batch.mark_origin)
    for split in batch.splits.values():
        rows.check_split(split)
    result = BatchResult()
    volumes = rows.stored_volumes(conn)
    _add_volumes(conn, batch.volumes, volumes, result, author=author)
    _add_marks(conn, batch.marks, volumes, result, origin=batch.mark_origin, author=author)
    for volume_id, split in batch.splits.items():
        changed = move_to_split(conn, _pk(volumes, volume_id), split, author=author)
        (result.split_changed if changed else result.split_unchanged).append(volume_id)
    for volume_id in dict.fromkeys(batch.complete):
        pk = _pk(volumes, volume_id)
        split, complete = conn.execute(
            "SELECT split, complete FROM volumes WHERE id = ?", (pk,)
        ).fetchone()
        if complete:
            result.already_complete.append(volume_id)
        else:
            write_complete(conn, pk, complete=True, author=author)
            (result.held_out if split in HELD_OUT_SPLITS else result.completed).append(volume_id)
    return result


def _pk(volumes: _Volumes, volume_id: str) -> int:
    if volume_id not in volumes:
        raise NotFoundError(f"the project has no volume {volume_id!r}")
    return volumes[volume_id][0]


def _add_volumes(
    conn, records: Iterable[VolumeRecord], volumes: _Volumes, result: BatchResult, *, author
) -> None:
    added: set[str] = set()
    for record in records:
        known = volumes.get(record.volume_id)
        if known is not None:
            differences = rows.volume_differences(known[1], record)
            if differences:
                where = "twice in this batch" if record.volume_id in added else "in the project"
                raise InvalidValueError(
                    f"volume {record.volume_id!r} is already {where} with other data "
                    f"({'; '.join(differences)}); nothing was added"
                )
            if record.volume_id not in added:
                result.volumes_present.append(record.volume_id)
            continue
        cursor = conn.execute(
            "INSERT INTO volumes (name, reader, path, split, shape_z, shape_y, "
            "shape_x, spacing_z, spacing_y, spacing_x, window_low, window_high, "
            "complete, completed_by, completed_at, imported_split, attributes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows.volume_values(record),
        )
        volumes[record.volume_id] = (int(cursor.lastrowid), record)
        added.add(record.volume_id)
        result.volumes_added.append(record.volume_id)
    if added:
        rows.append_audit(conn, author=author, action="volume.import", details={"n": len(added)})


def _add_marks(
    conn,
    entries: Sequence[MarkEntry],
    volumes: _Volumes,
    result: BatchResult,
    *,
    origin: str,
    author: str,
) -> None:
    if not entries:
        return
    known = _MarkIndex(conn, origin)
    kept_deleted: set[int] = set()
    for index, entry in enumerate(entries, start=1):
        where = entry.source or f"mark {index} of {len(entries)}"
        if entry.volume_id not in volumes:
            raise NotFoundError(f"{where}: the project has no volume {entry.volume_id!r}")
        pk, record = volumes[entry.volume_id]
        values = rows.checked_mark_values(
            entry.mark, record.shape, volume_id=entry.volume_id, where=where
        )
        same = known.matches(pk, values)
        if any(not deleted for _, deleted in same):
            result.marks_present += 1
        elif same:
            kept_deleted.add(same[0][0])
        else:
            mark_id = insert_mark(conn, pk, values, origin=origin, author=author, audit=False)
            known.add(pk, mark_id, values, deleted=False)
            result.marks_added.append(mark_id)
    result.marks_kept_deleted = sorted(kept_deleted)
    if result.marks_added:
        rows.append_audit(
            conn,
            author=author,
            action="mark.import",
            details={"n": len(result.marks_added), "origin": origin},
        )


class _MarkIndex:
    """The marks of one origin by volume, slice and the 1-pixel cell of their first
    endpoint, so that finding a mark's equals compares it with the few marks nearby."""

    def __init__(self, conn, origin: str):
        self._cells: dict[tuple, list[tuple[int, tuple, bool]]] = {}
        for mark_id, volume_pk, *values, deleted in conn.execute(
            f"SELECT id, volume_id, z, {rows.MARK_COORDS}, deleted_at IS NOT NULL FROM marks "
            "WHERE origin = ?",
            (origin,),
        ):
            self.add(volume_pk, mark_id, tuple(values), deleted=bool(deleted))

    @staticmethod
    def _cell(volume_pk: int, values: tuple) -> tuple[int, int, int, int]:
        return volume_pk, values[0], math.floor(values[1]), math.floor(values[2])

    def add(self, volume_pk: int, mark_id: int, values: tuple, *, deleted: bool) -> None:
        """Index one mark (:func:`~rows.mark_values`)."""
        self._cells.setdefault(self._cell(volume_pk, values), []).append(
            (mark_id, values, deleted)
        )

    def matches(self, volume_pk: int, values: tuple) -> list[tuple[int, bool]]:
        """``(id, deleted)`` of the indexed marks equal to ``values``
        (:func:`~rows.same_mark_values`; tolerances below a pixel, so the 3 x 3 cells
        around its own hold every equal)."""
        pk, z, cx, cy = self._cell(volume_pk, values)
        return [
            (mark_id, deleted)
            for dx in (-1, 0, 1)
            for dy in (-1, 0, 1)
            for mark_id, other, deleted in self._cells.get((pk, z, cx + dx, cy + dy), ())
            if rows.same_mark_values(values, other)
        ]


def insert_mark(
    conn, volume_pk: int, values: tuple, *, origin: str, author: str, audit: bool = True
) -> int:
    """Insert one mark (checked :func:`~rows.checked_mark_values`); returns its id.

    ``audit`` adds its own ``mark.add`` entry; batches write one
    ``mark.import`` entry instead.
    """
    at = rows.now()
    cursor = conn.execute(
        f"INSERT INTO marks (volume_id, z, {rows.MARK_COORDS}, origin, author, created_at, "
        "edited_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (volume_pk, *values, origin, author, at, at),
    )
    mark_id = int(cursor.lastrowid)
    if audit:
        rows.append_audit(
            conn,
            author=author,
            action="mark.add",
            volume_pk_=volume_pk,
            target_id=mark_id,
            details={"mark": list(values)},
            at=at,
        )
    return mark_id


def move_to_split(conn, volume_pk: int, split: str, *, author: str) -> bool:
    """Put a volume in ``split`` (also as its imported split); False when it already was."""
    before, imported = conn.execute(
        "SELECT split, imported_split FROM volumes WHERE id = ?", (volume_pk,)
    ).fetchone()
    if before == split == imported:
        return False
    conn.execute(
        "UPDATE volumes SET split = ?, imported_split = ? WHERE id = ?",
        (split, split, volume_pk),
    )
    rows.append_audit(
        conn,
        author=author,
        action="volume.split",
        volume_pk_=volume_pk,
        details={"before": before, "after": split},
    )
    return True


def write_complete(conn, volume_pk: int, *, complete: bool, author: str) -> None:
    """Mark a volume fully annotated or withdraw that. A training volume joins ``V_M``
    (withdrawn: back to its imported split); a held-out volume keeps its split (its
    marks become the evaluation's truth)."""
    split = conn.execute("SELECT split FROM volumes WHERE id = ?", (volume_pk,)).fetchone()[0]
    at = rows.now()
    moved = split not in HELD_OUT_SPLITS
    if complete:
        conn.execute(
            f"UPDATE volumes SET split = CASE WHEN ? THEN '{Split.V_M}' ELSE split END, "
            "complete = 1, completed_by = ?, completed_at = ? WHERE id = ?",
            (moved, author, at, volume_pk),
        )
    else:
        conn.execute(
            "UPDATE volumes SET split = CASE WHEN ? THEN imported_split ELSE split END, "
            "complete = 0, completed_by = NULL, completed_at = NULL WHERE id = ?",
            (moved, volume_pk),
        )
    rows.append_audit(
        conn,
        author=author,
        action="volume.complete",
        volume_pk_=volume_pk,
        at=at,
        details={"complete": bool(complete), "split_before": split},
    )
