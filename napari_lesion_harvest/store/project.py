"""The harvest project: a folder with ``project.sqlite``, ``models/`` and ``exports/``.

:class:`HarvestProject` is the one persistent state of the plugin. The GUI
uses it for the volume table, the overlays of the shown volume, marks
(add / edit / soft delete / restore), completing volumes and verdicts; the
round engine uses :attr:`HarvestProject.rounds` (see
:mod:`napari_lesion_harvest.store.rounds`), pretraining :attr:`HarvestProject.pretrained`
(:mod:`napari_lesion_harvest.store.pretrained`). Several processes may open the same
project at once: SQLite's WAL lets readers run beside one writer, and
every write is one short transaction that is durable when the call returns.

Examples
--------
>>> from napari_lesion_harvest.geometry import RecistMark
>>> from napari_lesion_harvest.store import HarvestProject, VolumeRecord
>>> import tempfile
>>> with HarvestProject.open(tempfile.mkdtemp(), create=True) as project:
...     _ = project.add_volumes([VolumeRecord("vol1", "synthetic", "-", "V_H")], author="me")
...     mark = project.add_mark(
...         "vol1",
...         RecistMark.from_measurement_coordinates([10, 10, 30, 10, 20, 5, 20, 15], z=3),
...         author="me",
...     )
...     [s.n_marks for s in project.volume_summaries()]
[1]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from napari_lesion_harvest.geometry import RecistMark
from napari_lesion_harvest.store import batches, rows
from napari_lesion_harvest.store.database import Database
from napari_lesion_harvest.store.errors import InvalidValueError, NotAProjectError
from napari_lesion_harvest.store.records import (
    AuditEntry,
    BatchResult,
    DataBatch,
    StoredMark,
    StoredProposal,
    StoredVerdict,
    VolumeOverlays,
    VolumeRecord,
    VolumeSummary,
)
from napari_lesion_harvest.store.schema import SCHEMA_VERSION
from napari_lesion_harvest.vocabulary import Origin, Role, Verdict

DATABASE_NAME = "project.sqlite"
MODELS_DIR = "models"
EXPORTS_DIR = "exports"

#: Proposal roles that a RECIST mark decides, each with why and what to do instead:
#: they take no expert verdict (see :meth:`HarvestProject.set_verdict`).
MARK_DECIDED_ROLES: dict[str, str] = {
    Role.P_RM: (
        "a marked lesion of a fully annotated volume (P_RM): its RECIST mark decides; "
        "edit or delete the mark instead"
    ),
    Role.P_neg_M: (
        "not a lesion: it hits no mark of a fully annotated volume (P_neg_M, hard negative); "
        "if it is a lesion, draw its RECIST mark (every lesion of a complete volume is marked)"
    ),
    Role.P_RH: (
        "a marked lesion (P_RH): it hits a RECIST mark, or a proposal accepted in an earlier "
        "round, which decides; edit or delete the mark instead"
    ),
}

# Counts per volume; the proposal counts use the covering index proposals_round, and
# verdicts (few) are joined from their side (CROSS JOIN fixes that loop order).
_SUMMARY_SQL = f"""
WITH r AS (SELECT id FROM rounds WHERE number = ?),
m AS (
    SELECT volume_id, count(*) AS n, sum(origin = '{Origin.expert}') AS n_expert
    FROM marks WHERE deleted_at IS NULL GROUP BY volume_id
), p AS (
    SELECT volume_id, count(*) AS n, sum(role = '{Role.P_pos_H}') AS n_pos
    FROM proposals WHERE round_id = (SELECT id FROM r) GROUP BY volume_id
), j AS (
    SELECT p.volume_id, count(*) AS n, sum(d.verdict = '{Verdict.accepted}') AS n_accepted,
           sum(p.role = '{Role.P_pos_H}') AS n_pos
    FROM verdicts d CROSS JOIN proposals p ON p.id = d.proposal_id
    WHERE p.round_id = (SELECT id FROM r) GROUP BY p.volume_id
)
SELECT v.name, v.split, v.complete, coalesce(m.n, 0), coalesce(m.n_expert, 0), coalesce(p.n, 0),
       coalesce(p.n_pos, 0) - coalesce(j.n_pos, 0) + coalesce(j.n_accepted, 0), coalesce(j.n, 0)
FROM volumes v LEFT JOIN m ON m.volume_id = v.id LEFT JOIN p ON p.volume_id = v.id
LEFT JOIN j ON j.volume_id = v.id
"""


class HarvestProject:
    """A harvest project folder.

    Use :meth:`open`; close with :meth:`close` or a ``with`` block.

    Parameters
    ----------
    folder : str or Path
        The project folder (holds ``project.sqlite``, ``models/``, ``exports/``).
    create : bool, optional
        Create the folder and an empty project when missing (default: refuse).
    synchronous : {"FULL", "NORMAL"}, optional
        SQLite fsync policy; FULL (default) makes each acknowledged change survive
        SIGKILL and power loss.

    Raises
    ------
    NotAProjectError
        Missing project (without ``create``), a foreign ``project.sqlite`` or
        not an SQLite file.
    DamagedProjectError
        ``project.sqlite`` is empty (0 bytes) or damaged (header, or a page of
        the annotation tables; see :mod:`~napari_lesion_harvest.store.database`).
    SchemaTooNewError
        Written by a newer release. An older schema is migrated (after a
        backup copy ``backups/project-v<N>-YYYYMMDD-HHMMSS.sqlite``).

    Notes
    -----
    A process holds one connection per project file: opening a project that
    the process has open already gives a handle on the same connection (see
    :meth:`share`), which closes with its last handle.
    """

    def __init__(self, folder: str | Path, *, create: bool = False, synchronous: str = "FULL"):
        folder = Path(folder)
        if not folder.is_dir():
            if not create:
                raise NotAProjectError(f"{folder} is not a harvest project folder")
            folder.mkdir(parents=True)
        db = Database(folder / DATABASE_NAME, create=create, synchronous=synchronous)
        self._attach(folder, db)
        for name in (MODELS_DIR, EXPORTS_DIR):
            (self.folder / name).mkdir(exist_ok=True)

    def _attach(self, folder: Path, db: Database) -> None:
        from napari_lesion_harvest.store.pretrained import PretrainedStore
        from napari_lesion_harvest.store.rounds import RoundStore

        self.folder = folder
        self._db = db
        self.rounds = RoundStore(self._db, self.folder)
        self.pretrained = PretrainedStore(self._db, self.folder)

    @classmethod
    def open(
        cls, folder: str | Path, *, create: bool = False, synchronous: str = "FULL"
    ) -> HarvestProject:
        """Open (or with ``create=True`` create) the project in ``folder``."""
        return cls(folder, create=create, synchronous=synchronous)

    def share(self) -> HarvestProject:
        """Another handle on this project's connection, e.g. for a worker thread.

        Closing either handle leaves the other usable; the threads take turns
        on the connection (one transaction at a time).
        """
        handle = object.__new__(type(self))
        handle._attach(self.folder, self._db.share())
        return handle

    # ---------------------------------------------------------------- lifecycle

    @property
    def database_path(self) -> Path:
        """``<folder>/project.sqlite``."""
        return self.folder / DATABASE_NAME

    @property
    def models_dir(self) -> Path:
        """Folder of model checkpoints."""
        return self.folder / MODELS_DIR

    @property
    def exports_dir(self) -> Path:
        """Default folder of exports."""
        return self.folder / EXPORTS_DIR

    @property
    def schema_version(self) -> int:
        """Schema version of the open file (always the current one after opening)."""
        return SCHEMA_VERSION

    @property
    def migrated_from(self) -> int | None:
        """Version the file was migrated from when opening it (None: no migration)."""
        return self._db.migrated_from

    def integrity_check(self) -> list[str]:
        """SQLite ``integrity_check`` + foreign-key check; an empty list means healthy."""
        return self._db.integrity_check()

    def backup(self, out: str | Path | None = None) -> Path:
        """Write a consistent, checked copy of ``project.sqlite``; returns its path.

        Safe while other programs use the project (see
        :mod:`~napari_lesion_harvest.store.backup`). ``out`` is a new file;
        default ``<folder>/backups/project-YYYYMMDD-HHMMSS.sqlite``.
        """
        from napari_lesion_harvest.store.backup import backup_path

        return self._db.backup_to(backup_path(self.folder) if out is None else Path(out))

    def close(self) -> None:
        """Close this handle (the connection closes with the process's last handle)."""
        self._db.close()

    def __enter__(self) -> HarvestProject:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ volumes

    def add_volumes(self, records: Iterable[VolumeRecord], *, author: str) -> int:
        """Add volumes in one transaction (an import); returns how many were added.

        A volume already in the project with the same reader, path, shape and
        spacing is left as it is (see :meth:`add_batch`).

        Parameters
        ----------
        records : iterable of VolumeRecord
        author : str
            Who imported them (audit log).

        Raises
        ------
        InvalidValueError
            A volume id already present with other data, or an unknown split
            (nothing is added).
        """
        batch = DataBatch(volumes=list(records))
        return len(self.add_batch(batch, author=author).volumes_added)

    def add_batch(self, batch: DataBatch, *, author: str) -> BatchResult:
        """Write volumes, marks, split changes and completions in one transaction.

        Everything is written, or (on any error) nothing. Re-running the same
        batch changes nothing: see :mod:`~napari_lesion_harvest.store.batches`
        for what counts as already present.

        Parameters
        ----------
        batch : DataBatch
        author : str
            Recorded in the audit log.

        Returns
        -------
        BatchResult
            What was added, and what was already there.

        Raises
        ------
        InvalidValueError
            A volume id already present (or twice in the batch) with other data,
            a mark outside its volume (naming the mark's source, the volume and
            the field), an unknown origin or split.
        NotFoundError
            A mark, split or completion of a volume in neither the project nor the batch.
        """
        with self._db.write("adding data") as conn:
            return batches.write_batch(conn, batch, author=author)

    def volume(self, volume_id: str) -> VolumeRecord:
        """One volume; :class:`NotFoundError` when unknown."""
        with self._db.read("reading a volume") as conn:
            row = conn.execute(f"{rows.VOLUME_SELECT} WHERE name = ?", (volume_id,)).fetchone()
        if row is None:
            raise rows.NotFoundError(f"the project has no volume {volume_id!r}")
        return rows.row_to_volume(row)

    def volumes(self, *, split: str | None = None) -> list[VolumeRecord]:
        """All volumes (of one split when given), in import order."""
        where, args = (
            ("", ()) if split is None else (" WHERE split = ?", (rows.check_split(split),))
        )
        with self._db.read("listing volumes") as conn:
            found = conn.execute(f"{rows.VOLUME_SELECT}{where} ORDER BY id", args).fetchall()
        return [rows.row_to_volume(row) for row in found]

    def volume_summaries(self, *, round_number: int | None = None) -> list[VolumeSummary]:
        """Every volume with its counts, for the volume table (one query).

        Parameters
        ----------
        round_number : int, optional
            Round whose proposals are counted; default the latest done round.

        Returns
        -------
        list of VolumeSummary
            In import order.
        """
        with self._db.read("summarising volumes") as conn:
            number = round_number if round_number is not None else _latest_done(conn)
            found = conn.execute(_SUMMARY_SQL + " ORDER BY v.id", (number,)).fetchall()
        return [
            VolumeSummary(name, split, bool(done), *counts) for name, split, done, *counts in found
        ]

    def set_split(self, volume_id: str, split: str, *, author: str) -> VolumeRecord:
        """Move a volume to another split (``V_M``, ``V_H``, ``V_H_test``, ``V_D_test``)."""
        rows.check_split(split)
        with self._db.write(f"changing the split of {volume_id}") as conn:
            batches.move_to_split(conn, rows.volume_pk(conn, volume_id), split, author=author)
        return self.volume(volume_id)

    def set_volume_complete(
        self, volume_id: str, *, author: str, complete: bool = True
    ) -> VolumeRecord:
        """Mark a volume fully annotated (every lesion marked), or withdraw that.

        A training volume joins ``V_M`` (withdrawing returns it to the split it
        had before). A held-out volume (``V_H_test``, ``V_D_test``) keeps its
        split: the flag makes its marks the evaluation's truth, and it never
        joins training.
        """
        with self._db.write(f"completing {volume_id}") as conn:
            batches.write_complete(
                conn, rows.volume_pk(conn, volume_id), complete=complete, author=author
            )
        return self.volume(volume_id)

    def set_display_window(self, volume_id: str, low: float, high: float, *, author: str) -> None:
        """Save the HU display window of a volume (``low < high``)."""
        if not float(low) < float(high):
            raise InvalidValueError(f"display window needs low < high; got ({low}, {high})")
        with self._db.write(f"saving the window of {volume_id}") as conn:
            pk = rows.volume_pk(conn, volume_id)
            conn.execute(
                "UPDATE volumes SET window_low = ?, window_high = ? WHERE id = ?",
                (float(low), float(high), pk),
            )
            rows.append_audit(
                conn,
                author=author,
                action="volume.window",
                volume_pk_=pk,
                details={"window": [float(low), float(high)]},
            )

    # -------------------------------------------------------------------- marks

    def add_mark(
        self, volume_id: str, mark: RecistMark, *, author: str, origin: str = Origin.expert
    ) -> StoredMark:
        """Save one mark; it is durable (fsynced) when this returns.

        Parameters
        ----------
        volume_id : str
        mark : RecistMark
            Slice ``z`` (0-based) and both axes in pixel coordinates, inside the
            volume (:func:`~napari_lesion_harvest.store.rows.checked_mark_values`).
        author : str
        origin : {"expert", "original"}, optional

        Returns
        -------
        StoredMark

        Raises
        ------
        InvalidValueError
            The mark lies outside its volume (naming the field), an unknown origin.
        NotFoundError
            An unknown volume.
        """
        rows.check_origin(origin)
        with self._db.write(f"adding a mark to {volume_id}") as conn:
            pk, record = rows.stored_volume(conn, volume_id)
            values = rows.checked_mark_values(
                mark, record.shape, volume_id=volume_id, where="new mark"
            )
            mark_id = batches.insert_mark(conn, pk, values, origin=origin, author=author)
            return rows.fetch_mark(conn, mark_id)

    def add_marks(
        self,
        items: Iterable[tuple[str, RecistMark]],
        *,
        author: str,
        origin: str = Origin.original,
    ) -> list[int]:
        """Save many marks in one transaction; returns their ids, in order.

        Every mark is added, also one equal to a mark already saved; use
        :meth:`add_batch` for data entry that is safe to re-run.

        Raises
        ------
        InvalidValueError
            A mark outside its volume (nothing is added).
        NotFoundError
            An unknown volume (nothing is added).
        """
        rows.check_origin(origin)
        ids = []
        with self._db.write("importing marks") as conn:
            volumes = rows.stored_volumes(conn)
            for index, (volume_id, mark) in enumerate(items, start=1):
                if volume_id not in volumes:
                    raise rows.NotFoundError(f"the project has no volume {volume_id!r}")
                pk, record = volumes[volume_id]
                values = rows.checked_mark_values(
                    mark, record.shape, volume_id=volume_id, where=f"item {index}"
                )
                ids.append(
                    batches.insert_mark(
                        conn, pk, values, origin=origin, author=author, audit=False
                    )
                )
            rows.append_audit(
                conn,
                author=author,
                action="mark.import",
                details={"n": len(ids), "origin": origin},
            )
        return ids

    def edit_mark(self, mark_id: int, mark: RecistMark, *, author: str) -> StoredMark:
        """Replace a mark's slice and endpoints; the new mark must lie inside
        the volume (:class:`InvalidValueError` naming the field otherwise)."""
        with self._db.write(f"editing mark {mark_id}") as conn:
            before = rows.fetch_mark(conn, mark_id)
            pk, record = rows.stored_volume(conn, before.volume_id)
            values = rows.checked_mark_values(
                mark, record.shape, volume_id=before.volume_id, where=f"mark {mark_id}"
            )
            self._set_mark_values(conn, mark_id, values)
            rows.append_audit(
                conn,
                author=author,
                action="mark.edit",
                volume_pk_=pk,
                target_id=int(mark_id),
                details={"before": list(rows.mark_values(before.mark)), "after": list(values)},
            )
            return rows.fetch_mark(conn, mark_id)

    @staticmethod
    def _set_mark_values(conn, mark_id: int, values: tuple) -> None:
        assignments = ", ".join(f"{column} = ?" for column in ("z", *rows.MARK_COORD_NAMES))
        conn.execute(
            f"UPDATE marks SET {assignments}, edited_at = ? WHERE id = ?",
            (*values, rows.now(), int(mark_id)),
        )

    def delete_mark(self, mark_id: int, *, author: str) -> StoredMark:
        """Soft-delete a mark (kept; :meth:`restore_mark` brings it back)."""
        return self._set_deleted([mark_id], True, author=author)[0][0]

    def restore_mark(self, mark_id: int, *, author: str) -> StoredMark:
        """Bring back a soft-deleted mark."""
        return self._set_deleted([mark_id], False, author=author)[0][0]

    def delete_marks(self, mark_ids: Iterable[int], *, author: str) -> list[int]:
        """Soft-delete marks in one transaction (:meth:`restore_marks` brings them back).

        Returns
        -------
        list of int
            The ids deleted now; marks already deleted are left as they are.

        Raises
        ------
        NotFoundError
            An unknown id (nothing is deleted).
        """
        return self._set_deleted(mark_ids, True, author=author)[1]

    def restore_marks(self, mark_ids: Iterable[int], *, author: str) -> list[int]:
        """Bring back soft-deleted marks in one transaction; returns the ids restored now."""
        return self._set_deleted(mark_ids, False, author=author)[1]

    def _set_deleted(
        self, mark_ids: Iterable[int], deleted: bool, *, author: str
    ) -> tuple[list[StoredMark], list[int]]:
        """Marks as they are after, and the ids changed (one audit entry each)."""
        action = "mark.delete" if deleted else "mark.restore"
        mark_ids = [int(mark_id) for mark_id in mark_ids]
        changed = []
        with self._db.write(f"{action} of mark(s) {', '.join(map(str, mark_ids))}") as conn:
            for mark_id in mark_ids:
                before = rows.fetch_mark(conn, mark_id)
                if before.deleted == deleted:
                    continue
                conn.execute(
                    "UPDATE marks SET deleted_at = ? WHERE id = ?",
                    (rows.now() if deleted else None, mark_id),
                )
                rows.append_audit(
                    conn,
                    author=author,
                    action=action,
                    volume_pk_=rows.volume_pk(conn, before.volume_id),
                    target_id=mark_id,
                )
                changed.append(mark_id)
            after = [rows.fetch_mark(conn, mark_id) for mark_id in mark_ids]
        return after, changed

    def mark(self, mark_id: int) -> StoredMark:
        """One mark by id (also when soft-deleted)."""
        with self._db.read("reading a mark") as conn:
            return rows.fetch_mark(conn, mark_id)

    def marks(
        self, volume_id: str | None = None, *, include_deleted: bool = False
    ) -> list[StoredMark]:
        """Marks of one volume (or of all), in creation order."""
        clauses, args = [], []
        if volume_id is not None:
            clauses.append("v.name = ?")
            args.append(volume_id)
        if not include_deleted:
            clauses.append("m.deleted_at IS NULL")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._db.read("reading marks") as conn:
            if volume_id is not None:
                rows.volume_pk(conn, volume_id)
            found = conn.execute(f"{rows.MARK_SELECT}{where} ORDER BY m.id", args).fetchall()
        return [rows.row_to_mark(row) for row in found]

    # ----------------------------------------------------------------- verdicts

    def set_verdict(
        self, proposal_id: int, verdict: str | None, *, author: str
    ) -> StoredVerdict | None:
        """Accept or reject a proposal (``None`` clears the verdict).

        A verdict settles what the classifier decided: ``accepted`` makes the
        proposal a lesion (exported as a harvested lesion, a positive for the
        next round), ``rejected`` makes it none (never exported, a hard
        negative for the next round). Only proposals the classifier decided
        take one: ``candidate``, ``P_pos_H`` (harvested) and ``P_neg_H`` (hard
        negative of V_H). A mark decides the others
        (:data:`MARK_DECIDED_ROLES`: P_RM, P_neg_M, P_RH); the way to change
        them is to edit the marks. Clearing a verdict is always allowed.

        Raises
        ------
        InvalidValueError
            An unknown verdict, or a verdict on a proposal a mark decides (the
            message names the proposal, its volume and role, and what to do).
        NotFoundError
            An unknown proposal.
        """
        if verdict is not None:
            rows.check_verdict(verdict)
        with self._db.write(f"saving a verdict on proposal {proposal_id}") as conn:
            target = rows.fetch_proposal(conn, proposal_id)
            if verdict is not None and target.role in MARK_DECIDED_ROLES:
                raise InvalidValueError(
                    f"proposal {target.id} of volume {target.volume_id!r} cannot be {verdict}: "
                    f"it is {MARK_DECIDED_ROLES[target.role]}"
                )
            previous = target.verdict
            at = rows.now()
            if verdict is None:
                conn.execute("DELETE FROM verdicts WHERE proposal_id = ?", (target.id,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO verdicts (proposal_id, verdict, author, at) "
                    "VALUES (?, ?, ?, ?)",
                    (target.id, verdict, author, at),
                )
            rows.append_audit(
                conn,
                author=author,
                action="verdict.set",
                volume_pk_=rows.volume_pk(conn, target.volume_id),
                target_id=target.id,
                at=at,
                details={
                    "before": None
                    if previous is None
                    else [previous.verdict, previous.author, previous.at],
                    "after": verdict,
                },
            )
        return None if verdict is None else StoredVerdict(target.id, verdict, author, at)

    def verdicts(self) -> list[StoredVerdict]:
        """Every verdict in the project, oldest first."""
        with self._db.read("reading verdicts") as conn:
            found = conn.execute(
                "SELECT proposal_id, verdict, author, at FROM verdicts ORDER BY at"
            ).fetchall()
        return [StoredVerdict(*row) for row in found]

    def audit_log(
        self, *, author: str | None = None, limit: int | None = None
    ) -> list[AuditEntry]:
        """Audit entries, newest first (of one author when given)."""
        where, args = ("", []) if author is None else (" WHERE a.author = ?", [author])
        tail = " LIMIT ?" if limit is not None else ""
        if limit is not None:
            args.append(int(limit))
        with self._db.read("reading the audit log") as conn:
            found = conn.execute(f"{rows.AUDIT_SELECT}{where} ORDER BY a.id DESC{tail}", args)
            return [rows.row_to_audit(row) for row in found.fetchall()]

    # ---------------------------------------------------------------- overlays

    def latest_done_round(self) -> int | None:
        """Number of the latest round with status ``done`` (None before the first)."""
        with self._db.read("reading rounds") as conn:
            return _latest_done(conn)

    def volume_overlays(
        self,
        volume_id: str,
        *,
        round_number: int | None = None,
        include_deleted: bool = False,
    ) -> VolumeOverlays:
        """Everything drawn over one volume, read in one consistent transaction.

        Parameters
        ----------
        volume_id : str
        round_number : int, optional
            Round whose proposals are shown; default the latest done round.
        include_deleted : bool, optional
            Also return soft-deleted marks (for an "undo" view).
        """
        deleted = "" if include_deleted else " AND m.deleted_at IS NULL"
        with self._db.read(f"reading the overlays of {volume_id}") as conn:
            pk = rows.volume_pk(conn, volume_id)
            volume = rows.row_to_volume(
                conn.execute(f"{rows.VOLUME_SELECT} WHERE id = ?", (pk,)).fetchone()
            )
            marks = conn.execute(
                f"{rows.MARK_SELECT} WHERE m.volume_id = ?{deleted} ORDER BY m.id", (pk,)
            ).fetchall()
            number = round_number if round_number is not None else _latest_done(conn)
            found = conn.execute(
                f"{rows.PROPOSAL_SELECT} WHERE p.volume_id = ? AND p.round_id = "
                "(SELECT id FROM rounds WHERE number = ?) ORDER BY p.id",
                (pk, number),
            ).fetchall()
        return VolumeOverlays(
            volume=volume,
            marks=[rows.row_to_mark(row) for row in marks],
            proposals=[rows.row_to_proposal(row) for row in found],
            round_number=number,
        )

    def proposal(self, proposal_id: int) -> StoredProposal:
        """One proposal with its verdict."""
        with self._db.read("reading a proposal") as conn:
            return rows.fetch_proposal(conn, proposal_id)

    def proposals(
        self,
        round_number: int,
        *,
        roles: Iterable[str] | None = None,
        volume_id: str | None = None,
        batch_size: int = 10_000,
    ) -> Iterator[StoredProposal]:
        """Stream the proposals of a round (e.g. a training set: ``roles=("P_RM", "P_RH")``).

        Read in batches of ``batch_size`` by increasing id, so memory stays
        bounded for a DeepLesion-scale round.
        """
        clauses, args = ["r.number = ?"], [int(round_number)]
        if roles is not None:
            roles = [rows.check_role(role) for role in roles]
            clauses.append(f"p.role IN ({', '.join('?' * len(roles))})")
            args += roles
        if volume_id is not None:
            clauses.append("v.name = ?")
            args.append(volume_id)
        last = 0
        while True:
            with self._db.read("reading proposals") as conn:
                batch = conn.execute(
                    f"{rows.PROPOSAL_SELECT} WHERE {' AND '.join(clauses)} AND p.id > ? "
                    "ORDER BY p.id LIMIT ?",
                    (*args, last, int(batch_size)),
                ).fetchall()
            if not batch:
                return
            for row in batch:
                yield rows.row_to_proposal(row)
            last = batch[-1][0]


def _latest_done(conn) -> int | None:
    row = conn.execute("SELECT max(number) FROM rounds WHERE status = 'done'").fetchone()
    return row[0]
