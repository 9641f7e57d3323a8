"""Harvest rounds in the project: lifecycle, input snapshot, stage results, checkpoints.

The round engine (another process than the GUI) drives a round like this::

    rounds = project.rounds
    number = rounds.next_number()
    with rounds.lock(number) as lock:          # refuses a second live round
        rounds.create({"lpg_epochs": 10}, lock=lock)     # queued under the lock
        try:
            snapshot = rounds.start(number, lock=lock)   # frozen inputs; reused on resume
            for stage in STAGES:
                if stage in snapshot.completed_stages:
                    continue                              # resuming after a crash
                result = run_stage(stage, snapshot)       # -> StageResult
                rounds.write_stage(number, stage, result, lock=lock)  # one transaction
            rounds.finish(number, lock=lock)
        except Exception as error:
            rounds.fail(number, str(error))
            raise

Readers never see half a stage: :meth:`RoundStore.write_stage` commits a
stage's proposals, role updates, pool, metrics and checkpoints in one
transaction. A process killed mid-stage leaves the round ``running`` with a
dead lock holder; the next :meth:`RoundStore.lock` (or
:meth:`RoundStore.recover_interrupted`) marks it ``failed``, and
:meth:`RoundStore.start` resumes it after its last committed stage.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from itertools import islice
from pathlib import Path

from napari_lesion_harvest.store import checkpoints, rows
from napari_lesion_harvest.store.database import Database
from napari_lesion_harvest.store.errors import (
    InvalidValueError,
    NotFoundError,
    RoundStateError,
    StoreError,
)
from napari_lesion_harvest.store.lock import STALE_AFTER_S, LockHolder, RoundLock, is_stale
from napari_lesion_harvest.store.project import MODELS_DIR
from napari_lesion_harvest.store.records import (
    CheckpointRef,
    ProposalRow,
    RoundRecord,
    RoundSnapshot,
    StageResult,
    StoredMark,
    StoredProposal,
    StoredVerdict,
)
from napari_lesion_harvest.store.schema import SPLITS
from napari_lesion_harvest.vocabulary import Role, RoundStatus, Verdict

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_ROUND_SELECT = (
    "SELECT id, number, status, stage, config, metrics, created_at, started_at, finished_at, "
    "error FROM rounds"
)


class RoundStore:
    """The rounds of one project (``HarvestProject.rounds``).

    Parameters
    ----------
    db : Database
        The project's database.
    folder : Path
        The project folder (checkpoints go to ``models/round_NNN/``).
    """

    def __init__(self, db: Database, folder: Path):
        self._db = db
        self.folder = Path(folder)

    # --------------------------------------------------------------- records

    def next_number(self) -> int:
        """The number :meth:`create` gives the next round."""
        with self._db.read("numbering the next round") as conn:
            return _next_number(conn)

    def create(
        self, config: Mapping | None = None, *, lock: RoundLock | None = None
    ) -> RoundRecord:
        """Queue a new round with its configuration (JSON-serialisable mapping).

        Parameters
        ----------
        config : mapping, optional
        lock : RoundLock, optional
            The lock taken for the new round's number (:meth:`next_number`):
            the round is created only while it is held, so a process that cannot
            run the round leaves no row behind.

        Raises
        ------
        RoundLockedError
            ``lock`` is not held.
        RoundStateError
            Another process created round ``lock.round_number`` meanwhile.
        """
        text = _json(config or {}, "round configuration")
        with self._db.write("creating a round") as conn:
            number = _next_number(conn)
            if lock is not None:
                lock.check(conn)
                if number != lock.round_number:
                    raise RoundStateError(
                        f"round {lock.round_number} was created by another process meanwhile; "
                        "run the command again"
                    )
            conn.execute(
                "INSERT INTO rounds (number, config, status, created_at) "
                "VALUES (?, ?, 'queued', ?)",
                (number, text, rows.now()),
            )
        return self.get(number)

    def get(self, number: int) -> RoundRecord:
        """One round; :class:`NotFoundError` when unknown."""
        with self._db.read(f"reading round {number}") as conn:
            row = conn.execute(f"{_ROUND_SELECT} WHERE number = ?", (int(number),)).fetchone()
            if row is None:
                raise NotFoundError(f"the project has no round {number}")
            return _round_record(conn, row)

    def list(self) -> list[RoundRecord]:
        """Every round, by number."""
        with self._db.read("listing rounds") as conn:
            found = conn.execute(f"{_ROUND_SELECT} ORDER BY number").fetchall()
            return [_round_record(conn, row) for row in found]

    # ------------------------------------------------------------- lifecycle

    def lock(self, number: int, *, stale_after_s: float = STALE_AFTER_S) -> RoundLock:
        """The lock to hold while running round ``number`` (use as a context manager).

        ``number`` is an existing round, or the next one (:meth:`next_number`),
        which :meth:`create` then adds under the lock.
        """
        with self._db.read(f"reading round {number}") as conn:
            exists = conn.execute("SELECT 1 FROM rounds WHERE number = ?", (int(number),))
            if exists.fetchone() is None and int(number) != _next_number(conn):
                raise NotFoundError(f"the project has no round {number}")
        return RoundLock(self._db, number, stale_after_s=stale_after_s)

    def lock_holder(self) -> LockHolder | None:
        """Who runs a round now (None when nobody holds the lock)."""
        from napari_lesion_harvest.store.lock import read_holder

        with self._db.read("reading the round lock") as conn:
            return read_holder(conn)

    def start(self, number: int, *, lock: RoundLock) -> RoundSnapshot:
        """Start (or resume) a round and return its input snapshot.

        A queued round's snapshot is taken now, in the same transaction that
        sets it ``running``; a failed round resumes with the snapshot it took
        when it first started and the stages it already committed. Temporary
        files that a killed checkpoint write left in the round's model folder
        are removed (no other process writes there while ``lock`` is held).

        Raises
        ------
        RoundStateError
            The round is done, cancelled or running.
        RoundLockedError
            ``lock`` is not held.
        """
        with self._db.write(f"starting round {number}") as conn:
            lock.check(conn)
            round_pk, status, config, blob = _round_state(conn, number)
            if status not in (RoundStatus.queued, RoundStatus.failed):
                raise RoundStateError(
                    f"round {number} is {status}; only a queued or failed round can be started"
                )
            if blob is None:
                blob = zlib.compress(json.dumps(_take_snapshot(conn, number)).encode())
            conn.execute(
                "UPDATE rounds SET status = 'running', error = NULL, finished_at = NULL, "
                "started_at = coalesce(started_at, ?), snapshot = ? WHERE id = ?",
                (rows.now(), blob, round_pk),
            )
            snapshot = _restore_snapshot(conn, number, round_pk, config, blob)
        for leftover in (self.folder / _models_folder(number)).glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        return snapshot

    def snapshot(self, number: int) -> RoundSnapshot:
        """The inputs round ``number`` took when it started, read back without
        changing the round (to inspect or re-run one of its stages elsewhere).

        Raises
        ------
        NotFoundError
            Unknown round.
        RoundStateError
            The round never started, so it took no snapshot.
        """
        with self._db.read(f"reading the snapshot of round {number}") as conn:
            round_pk, status, config, blob = _round_state(conn, number)
            if blob is None:
                raise RoundStateError(f"round {number} is {status} and has no snapshot yet")
            return _restore_snapshot(conn, number, round_pk, config, blob)

    def write_stage(
        self, number: int, stage: str, result: StageResult, *, lock: RoundLock
    ) -> range:
        """Commit one stage's results in a single transaction.

        Parameters
        ----------
        number : int
            A running round.
        stage : str
            Stage name (``[A-Za-z0-9_.-]+``), once per round.
        result : StageResult
            New proposals (streamed), role/score updates, pool, metrics, checkpoints.
        lock : RoundLock
            The held round lock (checked and heart-beaten in the transaction).

        Returns
        -------
        range
            Ids of the new proposals, in the order given.
        """
        _check_name(stage, "stage name")
        with self._db.write(f"writing stage {stage} of round {number}") as conn:
            lock.check(conn)
            round_pk, status, _, _ = _round_state(conn, number)
            if status != RoundStatus.running:
                raise RoundStateError(
                    f"round {number} is {status}, not running; stage {stage} was not written"
                )
            if stage in _completed_stages(conn, round_pk):
                raise RoundStateError(f"round {number} already committed stage {stage}")
            new_ids, pooled = _insert_proposals(conn, round_pk, stage, result.proposals)
            _apply_updates(conn, number, round_pk, result.updates)
            conn.executemany(
                "INSERT OR IGNORE INTO pool_members (round_id, proposal_id) VALUES (?, ?)",
                [(round_pk, pid) for pid in (*pooled, *map(int, result.pool_carry))],
            )
            _merge_metrics(conn, round_pk, result.metrics)
            for ref in result.checkpoints:
                self._register_checkpoint(conn, round_pk, ref)
            at = rows.now()
            conn.execute(
                "INSERT INTO round_stages (round_id, stage, finished_at) VALUES (?, ?, ?)",
                (round_pk, stage, at),
            )
            conn.execute("UPDATE rounds SET stage = ? WHERE id = ?", (stage, round_pk))
        return new_ids

    def finish(
        self, number: int, *, lock: RoundLock, metrics: Mapping | None = None
    ) -> RoundRecord:
        """Mark a running round ``done`` (its results become the shown round)."""
        with self._db.write(f"finishing round {number}") as conn:
            lock.check(conn)
            round_pk, status, _, _ = _round_state(conn, number)
            if status != RoundStatus.running:
                raise RoundStateError(f"round {number} is {status}, not running")
            _merge_metrics(conn, round_pk, metrics or {})
            conn.execute(
                "UPDATE rounds SET status = 'done', finished_at = ? WHERE id = ?",
                (rows.now(), round_pk),
            )
        return self.get(number)

    def fail(self, number: int, error: str, *, resumable: bool = True) -> RoundRecord:
        """Mark a queued or running round ``failed`` with a reason; it can be resumed.

        With ``resumable=False`` (a resume would fail the same way: the inputs
        it froze cannot give a result) the round ends ``cancelled`` with the
        reason instead, and the next round takes the project as it is then.
        """
        status = RoundStatus.failed if resumable else RoundStatus.cancelled
        return self._set_final(
            number, status, error, allowed=(RoundStatus.queued, RoundStatus.running)
        )

    def cancel(self, number: int, *, author: str) -> RoundRecord:
        """Cancel a queued, running or failed round (the user pressed Stop); not resumable."""
        record = self._set_final(
            number,
            RoundStatus.cancelled,
            f"cancelled by {author}",
            allowed=(RoundStatus.queued, RoundStatus.running, RoundStatus.failed),
            author=author,
        )
        return record

    def _set_final(
        self,
        number: int,
        status: RoundStatus,
        error: str,
        *,
        allowed: tuple[RoundStatus, ...],
        author: str | None = None,
    ) -> RoundRecord:
        with self._db.write(f"setting round {number} {status}") as conn:
            round_pk, current, _, _ = _round_state(conn, number)
            if current not in allowed:
                raise RoundStateError(f"round {number} is {current}; cannot set it {status}")
            conn.execute(
                "UPDATE rounds SET status = ?, error = ?, finished_at = ? WHERE id = ?",
                (status, error, rows.now(), round_pk),
            )
            if author is not None:
                rows.append_audit(
                    conn,
                    author=author,
                    action=f"round.{status}",
                    target_id=int(number),
                    details={"was": current},
                )
        return self.get(number)

    def recover_interrupted(self) -> list[int]:
        """Fail every ``running`` round whose process is gone; returns their numbers.

        Call it when opening a project in the GUI so a crashed round shows as
        failed (resumable) rather than running forever.
        """
        from napari_lesion_harvest.store.lock import fail_interrupted_round, read_holder

        with self._db.write("recovering interrupted rounds") as conn:
            holder = read_holder(conn)
            if holder is not None and is_stale(holder, now=rows.now()):
                conn.execute("DELETE FROM round_lock WHERE slot = 1")
            elif holder is not None:
                return []  # a live process runs its round
            running = conn.execute("SELECT number FROM rounds WHERE status = 'running'")
            dead = holder or LockHolder(None, 0, None, "an unknown host", "", 0.0, 0.0)
            return [
                number
                for (number,) in running.fetchall()
                if fail_interrupted_round(conn, replace(dead, round_number=number))
            ]

    # ------------------------------------------------------------- proposals

    def pool(self, number: int) -> list[StoredProposal]:
        """The proposal pool ``P_i`` of round ``number`` (proposals of this and earlier rounds)."""
        with self._db.read(f"reading the pool of round {number}") as conn:
            round_pk, _, _, _ = _round_state(conn, number)
            found = conn.execute(
                f"{rows.PROPOSAL_SELECT} JOIN pool_members pm ON pm.proposal_id = p.id "
                "WHERE pm.round_id = ? ORDER BY p.id",
                (round_pk,),
            ).fetchall()
        return [rows.row_to_proposal(row) for row in found]

    def harvested_lesions(self, number: int | None = None) -> list[StoredProposal]:
        """Lesions found by round ``number`` (default: the latest done round).

        The proposals of that round and of its pool that count as lesions
        (:attr:`StoredProposal.is_lesion`: accepted by an expert, or
        ``P_pos_H`` and not rejected), by id. Empty before the first done round.
        """
        with self._db.read("reading harvested lesions") as conn:
            if number is None:
                number = conn.execute(
                    "SELECT max(number) FROM rounds WHERE status = 'done'"
                ).fetchone()[0]
                if number is None:
                    return []
            round_pk, _, _, _ = _round_state(conn, number)
            found = conn.execute(
                f"{rows.PROPOSAL_SELECT} WHERE (p.round_id = ? OR p.id IN "
                "(SELECT proposal_id FROM pool_members WHERE round_id = ?)) "
                f"AND (d.verdict = '{Verdict.accepted}' "
                f"OR (d.verdict IS NULL AND p.role = '{Role.P_pos_H}')) "
                "ORDER BY p.id",
                (round_pk, round_pk),
            ).fetchall()
        return [rows.row_to_proposal(row) for row in found]

    # ----------------------------------------------------------- checkpoints

    def save_checkpoint(self, number: int, name: str, state) -> CheckpointRef:
        """Write ``state`` to round ``number``'s checkpoint file ``name``
        (:func:`checkpoint_location`) with the one durable writer,
        :func:`~napari_lesion_harvest.store.checkpoints.write_checkpoint`.

        The file is registered in the project when the returned reference is
        passed in a :class:`StageResult` (so it appears with its stage), or
        earlier with :meth:`record_checkpoint`.
        """
        self.get(number)
        relative = checkpoint_location(number, name)
        digest, size = checkpoints.write_checkpoint(state, self.folder / relative)
        return CheckpointRef(name=name, path=relative.as_posix(), sha256=digest, size=size)

    def record_checkpoint(self, number: int, ref: CheckpointRef, *, lock: RoundLock) -> None:
        """Record a checkpoint of running round ``number`` as soon as its file is durable
        (e.g. each training checkpoint, so that a resumed round can check the file it
        continues from); the stage that ends with it registers it again.

        Raises
        ------
        RoundLockedError
            ``lock`` is not held.
        RoundStateError
            The round is not running.
        """
        with self._db.write(f"recording checkpoint {ref.name} of round {number}") as conn:
            lock.check(conn)
            round_pk, status, _, _ = _round_state(conn, number)
            if status != RoundStatus.running:
                raise RoundStateError(f"round {number} is {status}, not running")
            self._register_checkpoint(conn, round_pk, ref)

    def checkpoint(self, name: str, *, round_number: int | None = None) -> CheckpointRef:
        """A registered checkpoint (default: from the latest round that has one by that name)."""
        with self._db.read(f"reading checkpoint {name}") as conn:
            row = conn.execute(
                "SELECT c.name, c.path, c.sha256, c.size FROM checkpoints c "
                "JOIN rounds r ON r.id = c.round_id "
                "WHERE c.name = ? AND (? IS NULL OR r.number = ?) "
                "AND (? IS NOT NULL OR r.status = 'done') ORDER BY r.number DESC LIMIT 1",
                (name, round_number, round_number, round_number),
            ).fetchone()
        if row is None:
            where = f"round {round_number}" if round_number is not None else "any done round"
            raise NotFoundError(f"no checkpoint named {name!r} in {where}")
        return CheckpointRef(*row)

    def _register_checkpoint(self, conn, round_pk: int, ref: CheckpointRef) -> None:
        path = self.folder / ref.path
        if not path.is_file() or path.stat().st_size != ref.size:
            raise InvalidValueError(
                f"checkpoint {ref.name}: {path} is missing or was changed since it was saved"
            )
        conn.execute(
            "INSERT INTO checkpoints (round_id, name, path, sha256, size, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (round_id, name) DO UPDATE SET "
            "path = excluded.path, sha256 = excluded.sha256, size = excluded.size, "
            "created_at = excluded.created_at",
            (round_pk, ref.name, ref.path, ref.sha256, ref.size, rows.now()),
        )


# ---------------------------------------------------------------------- helpers


def checkpoint_location(number: int, name: str) -> Path:
    """Where round ``number`` keeps checkpoint ``name``, relative to the project
    folder: ``models/round_NNN/<name>.pt``."""
    _check_name(name, "checkpoint name")
    return _models_folder(number) / f"{name}.pt"


def _models_folder(number: int) -> Path:
    return Path(MODELS_DIR) / f"round_{int(number):03d}"


def _next_number(conn) -> int:
    return conn.execute("SELECT coalesce(max(number), 0) + 1 FROM rounds").fetchone()[0]


def _json(value: Mapping, what: str) -> str:
    try:
        return json.dumps(dict(value), sort_keys=True)
    except (TypeError, ValueError) as error:
        raise InvalidValueError(f"{what} must be JSON-serialisable: {error}") from error


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name or ""):
        raise InvalidValueError(f"{what} must match [A-Za-z0-9_.-]+; got {name!r}")


def _round_state(conn, number: int) -> tuple[int, str, str, bytes | None]:
    row = conn.execute(
        "SELECT id, status, config, snapshot FROM rounds WHERE number = ?", (int(number),)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"the project has no round {number}")
    return row


def _completed_stages(conn, round_pk: int) -> tuple[str, ...]:
    return tuple(
        s
        for (s,) in conn.execute(
            "SELECT stage FROM round_stages WHERE round_id = ? ORDER BY finished_at", (round_pk,)
        )
    )


def _round_record(conn, row) -> RoundRecord:
    round_pk, number, status, stage, config, metrics, created, started, finished, error = row
    refs = conn.execute(
        "SELECT name, path, sha256, size FROM checkpoints WHERE round_id = ? ORDER BY id",
        (round_pk,),
    ).fetchall()
    return RoundRecord(
        number=number,
        status=status,
        stage=stage,
        completed_stages=_completed_stages(conn, round_pk),
        config=json.loads(config),
        metrics=json.loads(metrics),
        created_at=created,
        started_at=started,
        finished_at=finished,
        error=error,
        checkpoints=tuple(CheckpointRef(*ref) for ref in refs),
    )


def _merge_metrics(conn, round_pk: int, metrics: Mapping) -> None:
    if not metrics:
        return
    current = json.loads(
        conn.execute("SELECT metrics FROM rounds WHERE id = ?", (round_pk,)).fetchone()[0]
    )
    current.update(metrics)
    conn.execute(
        "UPDATE rounds SET metrics = ? WHERE id = ?", (_json(current, "round metrics"), round_pk)
    )


def _insert_proposals(
    conn, round_pk: int, stage: str, proposals: Iterable[ProposalRow], *, batch: int = 4096
) -> tuple[range, list[int]]:
    """Insert proposals in batches (streamed from the iterable); returns ids and pooled ids."""
    pks = rows.volume_pks(conn)
    first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM proposals").fetchone()[0]
    pooled: list[int] = []
    count = 0
    iterator = iter(proposals)
    while chunk := list(islice(iterator, batch)):
        conn.executemany(
            rows.PROPOSAL_INSERT,
            rows.proposal_values(
                chunk, round_pk=round_pk, volume_pks_=pks, stage=stage, first_index=count
            ),
        )
        pooled += [first + count + i for i, row in enumerate(chunk) if row.in_pool]
        count += len(chunk)
    last = conn.execute("SELECT coalesce(max(id), 0) FROM proposals").fetchone()[0]
    if count and last != first + count - 1:  # rowids are max + 1 inside our write transaction
        raise StoreError(f"proposal ids are not contiguous ({first}..{last} for {count})")
    return range(first, first + count), pooled


def _apply_updates(conn, number: int, round_pk: int, updates) -> None:
    changed = 0
    for update in updates:
        rows.check_role(update.role)
        cursor = conn.execute(
            "UPDATE proposals SET role = ?, s_c = ?, s_gc = ? WHERE id = ? AND round_id = ?",
            (update.role, update.s_c, update.s_gc, int(update.proposal_id), round_pk),
        )
        if cursor.rowcount != 1:
            raise NotFoundError(f"round {number} has no proposal {update.proposal_id} to update")
        changed += 1


def _take_snapshot(conn, number: int) -> dict:
    splits = dict(conn.execute("SELECT name, split FROM volumes"))
    marks = conn.execute(f"{rows.MARK_SELECT} WHERE m.deleted_at IS NULL ORDER BY m.id").fetchall()
    verdicts = conn.execute(
        "SELECT proposal_id, verdict, author, at FROM verdicts ORDER BY proposal_id"
    ).fetchall()
    previous = conn.execute(
        "SELECT max(number) FROM rounds WHERE status = 'done' AND number < ?", (int(number),)
    ).fetchone()[0]
    return {
        "taken_at": rows.now(),
        "splits": splits,
        "marks": [list(row[:15]) for row in marks],
        "verdicts": [list(row) for row in verdicts],
        "previous_round": previous,
    }


def _restore_snapshot(conn, number: int, round_pk: int, config: str, blob: bytes) -> RoundSnapshot:
    """The :class:`RoundSnapshot` of a round from its stored configuration (JSON text)
    and snapshot (zlib-compressed JSON)."""
    data = json.loads(zlib.decompress(blob))
    splits = data["splits"]
    volumes: dict[str, list] = {split: [] for split in SPLITS}
    for row in conn.execute(f"{rows.VOLUME_SELECT} ORDER BY id"):
        record = rows.row_to_volume(row)
        if record.volume_id in splits:
            volumes[splits[record.volume_id]].append(
                replace(record, split=splits[record.volume_id])
            )
    marks: dict[str, list[StoredMark]] = {}
    for values in data["marks"]:
        stored = rows.row_to_mark((*values, None))
        marks.setdefault(stored.volume_id, []).append(stored)
    verdicts = []
    for proposal_id, verdict, author, at in data["verdicts"]:
        stored = rows.fetch_proposal(conn, proposal_id)
        verdicts.append(replace(stored, verdict=StoredVerdict(proposal_id, verdict, author, at)))
    previous = data["previous_round"]
    pool = []
    if previous is not None:
        pool = [
            rows.row_to_proposal(row)
            for row in conn.execute(
                f"{rows.PROPOSAL_SELECT} JOIN pool_members pm ON pm.proposal_id = p.id "
                "WHERE pm.round_id = (SELECT id FROM rounds WHERE number = ?) ORDER BY p.id",
                (previous,),
            )
        ]
    return RoundSnapshot(
        round_number=int(number),
        config=json.loads(config),
        taken_at=data["taken_at"],
        volumes=volumes,
        marks=marks,
        verdicts=verdicts,
        previous_round=previous,
        previous_pool=pool,
        completed_stages=_completed_stages(conn, round_pk),
    )
