"""Opening ``project.sqlite`` safely and running transactions on it.

Durability: WAL journal with ``synchronous=FULL`` by default, so a commit
has been fsynced to the WAL file before the call that made it returns; an
acknowledged change survives SIGKILL of the process *and* a power cut.
(``synchronous=NORMAL`` would survive SIGKILL too, since committed WAL frames
are in the OS page cache, but could lose the last commits on power loss; the
benchmark shows FULL is cheap enough for marks.)
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from napari_lesion_harvest.store.errors import (
    InvalidValueError,
    NotAProjectError,
    StoreBusyError,
    StoreError,
    StoreWriteError,
)
from napari_lesion_harvest.store.schema import APPLICATION_ID, migrate, schema_version

SQLITE_MAGIC = b"SQLite format 3\x00"
#: Milliseconds a writer waits for another process's write transaction. A round
#: commits a DeepLesion-scale stage (10^6 boxes) in one transaction of 5 to 15 s on a
#: 2-core machine; a mark saved meanwhile waits for it instead of failing.
BUSY_TIMEOUT_MS = 60_000
#: Page cache per connection (KiB): holds the proposal indexes of a 10^6-box stage.
CACHE_KIB = 32 * 1024


class Database:
    """One connection to a project file, shared by the threads of one process.

    Parameters
    ----------
    path : Path
        ``project.sqlite``.
    create : bool
        Create the file when it does not exist.
    synchronous : {"FULL", "NORMAL"}
        SQLite's fsync policy (see the module docstring).
    """

    def __init__(self, path: Path, *, create: bool, synchronous: str = "FULL"):
        if synchronous not in ("FULL", "NORMAL"):
            raise InvalidValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.path = Path(path)
        self._lock = threading.RLock()
        _check_header(self.path, create=create)
        self.migrated_from: int | None = None
        try:
            self.conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0
            )
        except sqlite3.Error as error:
            raise NotAProjectError(f"cannot open {self.path}: {error}") from error
        try:
            with self.translate("opening the project"):
                self._configure(synchronous)
                self._check_identity()
                self.migrated_from = self._migrate()
        except BaseException:
            self.conn.close()
            raise

    # ------------------------------------------------------------------ setup

    def _configure(self, synchronous: str) -> None:
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise NotAProjectError(f"{self.path}: cannot switch to WAL journal (got {mode})")
        self.conn.execute(f"PRAGMA synchronous = {synchronous}")
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")

    def _check_identity(self) -> None:
        app_id = int(self.conn.execute("PRAGMA application_id").fetchone()[0])
        n_tables = self.conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        if app_id == APPLICATION_ID or (app_id == 0 and n_tables == 0):
            return
        raise NotAProjectError(
            f"{self.path} is an SQLite database of another application "
            f"(application_id {app_id:#x}, {n_tables} schema objects), not a harvest project"
        )

    def _migrate(self) -> int | None:
        version = schema_version(self.conn)
        from napari_lesion_harvest.store.schema import SCHEMA_VERSION

        if version == SCHEMA_VERSION:
            return None
        if 0 < version < SCHEMA_VERSION:
            self._backup(self.path.with_name(f"{self.path.name}.v{version}.bak"))
        return migrate(self.conn, path=str(self.path))

    def _backup(self, target: Path) -> None:
        """Copy the database (consistently) before a migration touches it."""
        if target.exists():
            return
        copy = sqlite3.connect(target)
        try:
            self.conn.backup(copy)
        finally:
            copy.close()

    # ------------------------------------------------------------- transactions

    @contextmanager
    def translate(self, action: str) -> Iterator[None]:
        """Turn :mod:`sqlite3` errors into typed :class:`StoreError` s naming the file."""
        try:
            yield
        except StoreError:
            raise
        except sqlite3.Error as error:
            raise _typed_error(error, self.path, action) from error

    @contextmanager
    def write(self, action: str) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): commits whole or rolls back.

        Returns only after the commit is durable. ``action`` names the change in
        error messages ("adding a mark to 0001_01_01").
        """
        with self._lock, self.translate(action):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

    @contextmanager
    def read(self, action: str) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same committed state."""
        with self._lock, self.translate(action):
            self.conn.execute("BEGIN")
            try:
                yield self.conn
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("COMMIT")

    def integrity_check(self) -> list[str]:
        """Run ``PRAGMA integrity_check`` and foreign-key checks; returns problems (empty = ok)."""
        with self.read("checking integrity") as conn:
            rows = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
            problems = [] if rows == ["ok"] else rows
            problems += [
                f"foreign key: table {row[0]} row {row[1]} -> {row[2]}"
                for row in conn.execute("PRAGMA foreign_key_check")
            ]
        return problems

    def close(self) -> None:
        """Close the connection (checkpointing the WAL when no one else has it open)."""
        with self._lock:
            self.conn.close()


def _check_header(path: Path, *, create: bool) -> None:
    if not path.exists():
        if not create:
            raise NotAProjectError(f"{path} does not exist; create the project first")
        return
    if not path.is_file():
        raise NotAProjectError(f"{path} is not a file")
    with open(path, "rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    if head and head != SQLITE_MAGIC:
        raise NotAProjectError(
            f"{path} is not an SQLite database (it starts with {head[:8]!r}); "
            "it is corrupt or not a harvest project"
        )


def _typed_error(error: sqlite3.Error, path: Path, action: str) -> StoreError:
    name = getattr(error, "sqlite_errorname", "") or ""
    text = str(error)
    where = f"{path}: {action} failed"
    if name == "SQLITE_FULL" or "full" in text:
        return StoreWriteError(
            f"{where}: the disk is full ({text}). This change was not saved; everything "
            "saved before it is intact. Free some space and try again."
        )
    if name.startswith("SQLITE_IOERR") or "disk I/O error" in text:
        return StoreWriteError(
            f"{where}: the disk refused the write ({text}; disk full or I/O error). This "
            "change was not saved; everything saved before it is intact."
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return StoreBusyError(
            f"{where}: another process kept the project locked for more than "
            f"{BUSY_TIMEOUT_MS / 1000:.0f} s ({text}); try again"
        )
    if (
        name in ("SQLITE_NOTADB", "SQLITE_CORRUPT")
        or "malformed" in text
        or "not a database" in text
    ):
        return NotAProjectError(f"{where}: the file is damaged or not a project ({text})")
    if isinstance(error, sqlite3.IntegrityError):
        return InvalidValueError(f"{where}: {text}")
    return StoreError(f"{where}: {text}")
