"""The project database schema and its forward migrations.

A project file carries two numbers in its SQLite header: ``application_id``
(:data:`APPLICATION_ID`, so a foreign SQLite file is recognised) and
``user_version`` (the schema version). Each entry of :data:`MIGRATIONS` takes
the schema from version ``n - 1`` to ``n``; entries are never edited once
released, so a file written by an older release migrates by running the
missing steps, in one transaction. A file whose version is newer than
:data:`SCHEMA_VERSION` is refused.

``volumes.complete`` = 1 says that every lesion of the volume is marked. On a
training volume it comes with split ``V_M`` (the volume teaches the rounds); on a
held-out volume (``V_H_test``, ``V_D_test``) the split stays, and a complete
``V_H_test`` volume's marks are the evaluation's truth. Rounds choose their
training volumes by split alone, so the flag never moves test data into training.

Version history
---------------
1. volumes, marks (RECIST, soft delete), append-only audit log.
2. rounds, round stages, checkpoints, proposals (per-slice boxes as blobs),
   round pools, verdicts, the round lock.
"""

from __future__ import annotations

import sqlite3

from napari_lesion_harvest.store.errors import SchemaTooNewError

#: ``PRAGMA application_id`` of a harvest project ("LHRV").
APPLICATION_ID = 0x4C485256

# The values the CHECK constraints allow, written out: released migrations never change.
# They equal the members of napari_lesion_harvest.vocabulary (tests/test_vocabulary.py).
SPLITS = ("V_M", "V_H", "V_H_test", "V_D_test")
ORIGINS = ("original", "expert")
ROLES = ("P_RM", "P_neg_M", "P_RH", "P_pos_H", "P_neg_H", "candidate")
ROUND_STATUSES = ("queued", "running", "done", "failed", "cancelled")
VERDICTS = ("accepted", "rejected")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


_V1 = f"""
CREATE TABLE volumes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    reader TEXT NOT NULL,
    path TEXT NOT NULL,
    split TEXT NOT NULL CHECK (split IN {_in(SPLITS)}),
    imported_split TEXT NOT NULL CHECK (imported_split IN {_in(SPLITS)}),
    shape_z INTEGER, shape_y INTEGER, shape_x INTEGER,
    spacing_z REAL, spacing_y REAL, spacing_x REAL,
    window_low REAL, window_high REAL,
    complete INTEGER NOT NULL DEFAULT 0 CHECK (complete IN (0, 1)),
    completed_by TEXT,
    completed_at REAL,
    attributes TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX volumes_split ON volumes (split);

CREATE TABLE marks (
    id INTEGER PRIMARY KEY,
    volume_id INTEGER NOT NULL REFERENCES volumes (id),
    z INTEGER NOT NULL CHECK (z >= 0),
    long_x1 REAL NOT NULL, long_y1 REAL NOT NULL, long_x2 REAL NOT NULL, long_y2 REAL NOT NULL,
    short_x1 REAL NOT NULL, short_y1 REAL NOT NULL,
    short_x2 REAL NOT NULL, short_y2 REAL NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN {_in(ORIGINS)}),
    author TEXT NOT NULL,
    created_at REAL NOT NULL,
    edited_at REAL NOT NULL,
    deleted_at REAL
);
CREATE INDEX marks_volume ON marks (volume_id, deleted_at);

CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    author TEXT NOT NULL,
    action TEXT NOT NULL,
    volume_id INTEGER REFERENCES volumes (id),
    target_id INTEGER,
    details TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX audit_author ON audit (author, id);
CREATE INDEX audit_target ON audit (target_id);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

_V2 = f"""
CREATE TABLE rounds (
    id INTEGER PRIMARY KEY,
    number INTEGER NOT NULL UNIQUE CHECK (number >= 1),
    config TEXT NOT NULL DEFAULT '{{}}',
    status TEXT NOT NULL CHECK (status IN {_in(ROUND_STATUSES)}),
    stage TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    metrics TEXT NOT NULL DEFAULT '{{}}',
    error TEXT,
    snapshot BLOB
);

CREATE TABLE round_stages (
    round_id INTEGER NOT NULL REFERENCES rounds (id),
    stage TEXT NOT NULL,
    finished_at REAL NOT NULL,
    PRIMARY KEY (round_id, stage)
) WITHOUT ROWID;

CREATE TABLE checkpoints (
    id INTEGER PRIMARY KEY,
    round_id INTEGER NOT NULL REFERENCES rounds (id),
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (round_id, name)
);

CREATE TABLE proposals (
    id INTEGER PRIMARY KEY,
    round_id INTEGER NOT NULL REFERENCES rounds (id),
    volume_id INTEGER NOT NULL REFERENCES volumes (id),
    stage TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN {_in(ROLES)}),
    x1 REAL NOT NULL, y1 REAL NOT NULL, z1 REAL NOT NULL,
    x2 REAL NOT NULL, y2 REAL NOT NULL, z2 REAL NOT NULL,
    s_g REAL NOT NULL,
    s_c REAL,
    s_gc REAL,
    n_slices INTEGER NOT NULL CHECK (n_slices >= 1),
    slices BLOB NOT NULL CHECK (length(slices) = 4 * n_slices),
    boxes BLOB NOT NULL CHECK (length(boxes) = 16 * n_slices),
    scores BLOB NOT NULL CHECK (length(scores) = 4 * n_slices),
    meta TEXT
);
CREATE INDEX proposals_volume ON proposals (volume_id, round_id);
CREATE INDEX proposals_round ON proposals (round_id, volume_id, role);

CREATE TABLE pool_members (
    round_id INTEGER NOT NULL REFERENCES rounds (id),
    proposal_id INTEGER NOT NULL REFERENCES proposals (id),
    PRIMARY KEY (round_id, proposal_id)
) WITHOUT ROWID;

CREATE TABLE verdicts (
    proposal_id INTEGER PRIMARY KEY REFERENCES proposals (id),
    verdict TEXT NOT NULL CHECK (verdict IN {_in(VERDICTS)}),
    author TEXT NOT NULL,
    at REAL NOT NULL
);

CREATE TABLE round_lock (
    slot INTEGER PRIMARY KEY CHECK (slot = 1),
    round_number INTEGER,
    pid INTEGER NOT NULL,
    pid_start TEXT,
    host TEXT NOT NULL,
    token TEXT NOT NULL,
    acquired_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL
);
"""

#: ``MIGRATIONS[n - 1]`` takes the schema from version ``n - 1`` to ``n``. Append only.
MIGRATIONS: tuple[str, ...] = (_V1, _V2)
#: The schema version this release writes.
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The ``user_version`` stored in the database header."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, *, target: int = SCHEMA_VERSION, path: str = "") -> int:
    """Bring the schema of ``conn`` forward to ``target``, in one transaction.

    Parameters
    ----------
    conn : sqlite3.Connection
        Connection in autocommit mode (``isolation_level=None``).
    target : int, optional
        Version to reach; defaults to :data:`SCHEMA_VERSION`. Lower targets
        exist for tests that build a project as an older release wrote it.
    path : str, optional
        File name used in error messages.

    Returns
    -------
    int
        The version the file had before migrating (0 for a new file).

    Raises
    ------
    SchemaTooNewError
        The file's version is above :data:`SCHEMA_VERSION`.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(conn)
        if found > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"{path or 'the project'} has schema version {found}, but this release of "
                f"napari-lesion-harvest reads versions up to {SCHEMA_VERSION}; "
                "open it with a newer release"
            )
        if found == 0:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        for version in range(found + 1, target + 1):
            for statement in _statements(MIGRATIONS[version - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


def _statements(script: str) -> list[str]:
    """Split a migration script into complete SQL statements (triggers stay whole)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        raise ValueError(f"incomplete SQL statement in migration: {current.strip()[:80]}")
    return statements
