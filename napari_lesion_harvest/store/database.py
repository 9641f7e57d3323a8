"""Opening ``project.sqlite`` safely and running transactions on it.

Durability: WAL journal with ``synchronous=FULL`` by default, so a commit
has been fsynced to the WAL file before the call that made it returns; an
acknowledged change survives SIGKILL of the process *and* a power cut.
(``synchronous=NORMAL`` would survive SIGKILL too, since committed WAL frames
are in the OS page cache, but could lose the last commits on power loss; the
benchmark shows FULL is cheap enough for marks.)

One connection per process: SQLite's locks are POSIX advisory locks, and a
process loses every lock it holds on a file as soon as it closes *any*
descriptor of that file. A process that lost its locks looks absent to the
others, and the next one to close the project deletes the ``-wal`` file that
the first still writes to (its later changes are lost). So this module never
opens the project files with plain file I/O (it looks at them with
:func:`os.stat` and reads them through SQLite only), and opening a file that
this process has open already (same path, device and inode) returns another
handle on the same connection; the connection closes with its last handle.

Opening checks the file: an empty (0-byte) file, a damaged header or a
damaged page of the annotation tables is refused with
:class:`~napari_lesion_harvest.store.errors.DamagedProjectError`. The check is
``PRAGMA quick_check`` of every table except the round tables
(:data:`BULK_TABLES`): those hold about 10^6 proposals per DeepLesion round,
and checking them costs about 2 s per 10^6 proposals on a 2-core CPU with a
warm cache (docs/performance.md), too much for every open; the rest is
checked in about 0.06 s at DeepLesion scale (15,000 volumes, 30,000 marks).
Damage in the round tables is met when a read reaches it, and raised as the
same error; ``lesion-harvest check`` runs the full ``integrity_check``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from napari_lesion_harvest.store.errors import (
    DamagedProjectError,
    InvalidValueError,
    NotAProjectError,
    StoreBusyError,
    StoreError,
    StoreWriteError,
)
from napari_lesion_harvest.store.schema import APPLICATION_ID, migrate, schema_version

#: Milliseconds a writer waits for another process's write transaction. A round
#: commits a DeepLesion-scale stage (10^6 boxes) in one transaction of 5 to 15 s on a
#: 2-core machine; a mark saved meanwhile waits for it instead of failing.
BUSY_TIMEOUT_MS = 60_000
#: Page cache per connection (KiB): holds the proposal indexes of a 10^6-box stage.
CACHE_KIB = 32 * 1024
#: Tables left out of the check made when a project opens (see the module docstring).
BULK_TABLES = ("proposals", "pool_members")
#: Files SQLite keeps beside ``project.sqlite`` (journal, write-ahead log, its index).
SIDE_SUFFIXES = ("-journal", "-wal", "-shm")
#: SQLite's result codes for a damaged file.
_DAMAGE_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
#: Times a project is reopened when its file is replaced (a restore) while opening it.
_OPEN_ATTEMPTS = 3


class _SharedConnection:
    """This process's one connection to one project file, used by every handle on it."""

    def __init__(self, path: Path, conn: sqlite3.Connection, synchronous: str):
        self.path = path
        self.conn = conn
        self.synchronous = synchronous
        self.lock = threading.RLock()
        self.key = _registry_key(path)
        self.handles = 0
        self.migrated_from: int | None = None


#: Open connections, by process id and :func:`file_key`: a child process forked
#: from this one never uses (or closes) the connections it inherited.
_OPEN: dict[tuple[int, tuple[str, int, int] | None], _SharedConnection] = {}
_OPEN_LOCK = threading.Lock()


def file_key(path: Path) -> tuple[str, int, int] | None:
    """``(real path, device, inode)`` of a file, or None when it does not exist."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (os.path.realpath(path), stat.st_dev, stat.st_ino)


def is_open_here(path: Path) -> bool:
    """Whether this process has a connection to the project file ``path``."""
    with _OPEN_LOCK:
        return _registry_key(Path(path)) in _OPEN


def _registry_key(path: Path) -> tuple[int, tuple[str, int, int] | None]:
    return (os.getpid(), file_key(path))


class Database:
    """A handle on this process's connection to a project file.

    Handles of one file share one connection (see the module docstring); the
    threads of the process take turns on it.

    Parameters
    ----------
    path : Path
        ``project.sqlite``.
    create : bool
        Create the file when it does not exist (or is the empty file of an
        interrupted creation, alone in its folder).
    synchronous : {"FULL", "NORMAL"}
        SQLite's fsync policy (see the module docstring); all handles of one
        file use the policy of the first.

    Raises
    ------
    NotAProjectError
        Missing, foreign or not SQLite.
    DamagedProjectError
        Empty (0 bytes), damaged header, or a damaged page in an annotation table.
    """

    def __init__(self, path: Path, *, create: bool, synchronous: str = "FULL"):
        if synchronous not in ("FULL", "NORMAL"):
            raise InvalidValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.path = Path(path)
        self._shared: _SharedConnection | None = _open_shared(
            self.path, create=create, synchronous=synchronous
        )

    def share(self) -> Database:
        """Another handle on the same connection (closed separately)."""
        shared = self._use()
        handle = object.__new__(Database)
        handle.path = self.path
        with _OPEN_LOCK:
            shared.handles += 1
        handle._shared = shared
        return handle

    def _use(self) -> _SharedConnection:
        if self._shared is None:
            raise StoreError(f"{self.path}: this project handle was closed; open the project")
        return self._shared

    @property
    def conn(self) -> sqlite3.Connection:
        """The shared connection (hold :meth:`write` or :meth:`read` to use it)."""
        return self._use().conn

    @property
    def migrated_from(self) -> int | None:
        """Schema version the file was migrated from when first opened (None: none)."""
        return self._use().migrated_from

    # ------------------------------------------------------------- transactions

    @contextmanager
    def translate(self, action: str) -> Iterator[None]:
        """Turn :mod:`sqlite3` errors into typed :class:`StoreError` s naming the file."""
        with translated(self.path, action):
            yield

    @contextmanager
    def write(self, action: str) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): commits whole or rolls back.

        Returns only after the commit is durable. ``action`` names the change in
        error messages ("adding a mark to 0001_01_01").
        """
        shared = self._use()
        with shared.lock, self.translate(action):
            conn = shared.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def read(self, action: str) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same committed state."""
        shared = self._use()
        with shared.lock, self.translate(action):
            conn = shared.conn
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def integrity_check(self) -> list[str]:
        """Run ``PRAGMA integrity_check`` and foreign-key checks; returns problems (empty = ok)."""
        shared = self._use()
        with shared.lock, self.translate("checking integrity"):
            return full_check(shared.conn)

    def backup_to(self, target: Path) -> Path:
        """Write a consistent copy of the project to the new file ``target``.

        See :func:`napari_lesion_harvest.store.backup.copy_database`.
        """
        from napari_lesion_harvest.store.backup import copy_database

        shared = self._use()
        with shared.lock, self.translate("backing up the project"):
            return copy_database(shared.conn, Path(target), source=self.path)

    def close(self) -> None:
        """Close this handle; the last handle of a file closes the connection.

        Closing the last connection of all processes checkpoints the WAL into
        ``project.sqlite`` and removes the ``-wal`` and ``-shm`` files.
        """
        with _OPEN_LOCK:
            shared, self._shared = self._shared, None
            if shared is None:
                return
            shared.handles -= 1
            if shared.handles:
                return
            if _OPEN.get(shared.key) is shared:
                del _OPEN[shared.key]
            with shared.lock, self.translate("closing the project"):
                shared.conn.close()


# -------------------------------------------------------------------- opening


def _open_shared(path: Path, *, create: bool, synchronous: str) -> _SharedConnection:
    with _OPEN_LOCK:
        for _ in range(_OPEN_ATTEMPTS):
            check_file(path, create=create)
            shared = _OPEN.get(_registry_key(path))
            if shared is None:
                shared = _connect(path, create=create, synchronous=synchronous)
                if shared is None:
                    continue  # replaced while opening: open the new file
                _OPEN[shared.key] = shared
            elif shared.synchronous != synchronous:
                raise InvalidValueError(
                    f"{path} is open in this process with synchronous={shared.synchronous}; "
                    f"cannot open it again with synchronous={synchronous}"
                )
            shared.handles += 1
            return shared
    raise StoreBusyError(f"{path} was replaced {_OPEN_ATTEMPTS} times while opening it; try again")


def _connect(path: Path, *, create: bool, synchronous: str) -> _SharedConnection | None:
    """Connect, configure, check and migrate; None when the file was replaced meanwhile."""
    before = file_key(path)
    mode = "rwc" if create else "rw"  # "rw": a file deleted since the check is not re-created
    try:
        conn = sqlite3.connect(
            f"file:{quote(str(path))}?mode={mode}",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=0,
        )
    except sqlite3.Error as error:
        raise NotAProjectError(f"cannot open {path}: {error}") from error
    try:
        with translated(path, "opening the project"):
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _check_identity(conn, path)  # the first read: waits while a restore holds the file
            if before is not None and file_key(path) != before:
                conn.close()
                return None
            _use_wal(conn, path)
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            _check_pages(conn, path)
            shared = _SharedConnection(path, conn, synchronous)
            shared.migrated_from = _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return shared


def check_file(path: Path, *, create: bool) -> None:
    """Refuse a missing (unless ``create``), non-regular or empty project file.

    Uses :func:`os.stat` only (see the module docstring). An empty file is
    accepted with ``create`` only where it is the leftover of an interrupted
    creation: the folder holds nothing else (a project that was opened once
    has its ``models`` and ``exports`` folders).
    """
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        if not create:
            raise NotAProjectError(f"{path} does not exist; create the project first") from None
        return
    if not os.path.isfile(path):
        raise NotAProjectError(f"{path} is not a file")
    if stat.st_size == 0 and not (create and _only_an_empty_project_file(path)):
        raise DamagedProjectError(
            f"{path} is empty (0 bytes): it holds no project data. If this folder held a "
            f"project, {restore_hint(path)}. To start a new project here instead, delete "
            "the empty file first."
        )


def _only_an_empty_project_file(path: Path) -> bool:
    """Whether the folder of ``path`` holds nothing but it and its SQLite side files."""
    own = {path.name, *(path.name + suffix for suffix in SIDE_SUFFIXES)}
    return all(entry.name in own for entry in path.parent.iterdir())


def _use_wal(conn: sqlite3.Connection, path: Path) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise NotAProjectError(f"{path}: cannot switch to WAL journal (got {mode})")


def _check_identity(conn: sqlite3.Connection, path: Path) -> None:
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    n_tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    if app_id == APPLICATION_ID or (app_id == 0 and n_tables == 0):
        return
    raise NotAProjectError(
        f"{path} is an SQLite database of another application "
        f"(application_id {app_id:#x}, {n_tables} schema objects), not a harvest project"
    )


def _check_pages(conn: sqlite3.Connection, path: Path) -> None:
    """``PRAGMA quick_check`` of the schema and every table but :data:`BULK_TABLES`."""
    problems = _table_problems(conn, "quick_check", skip=BULK_TABLES, first_only=True)
    if problems:
        raise DamagedProjectError(f"{path} is damaged ({problems[0]}); {restore_hint(path)}")


def _table_problems(
    conn: sqlite3.Connection, pragma: str, *, skip: tuple[str, ...] = (), first_only: bool = False
) -> list[str]:
    """Run ``PRAGMA <pragma>(table)`` table by table: ``"table T: problem"`` lines.

    Parameters
    ----------
    conn : sqlite3.Connection
    pragma : {"quick_check", "integrity_check"}
    skip : tuple of str, optional
        Tables left out.
    first_only : bool, optional
        Stop at the first table with a problem.
    """
    tables = [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name"
        )
        if name not in skip
    ]
    problems = []
    for table in ["sqlite_schema", *tables]:
        try:
            found = [str(row[0]) for row in conn.execute(f'PRAGMA {pragma}("{table}")')]
        except sqlite3.DatabaseError as error:
            if not getattr(error, "sqlite_errorname", "").startswith(_DAMAGE_CODES):
                raise
            found = [str(error)]
        if found != ["ok"]:
            problems += [f"table {table}: {line}" for line in found]
            if first_only:
                break
    return problems


def full_check(conn: sqlite3.Connection) -> list[str]:
    """``PRAGMA integrity_check`` and ``foreign_key_check`` of ``conn``; problems, empty = ok.

    Where damage stops the whole-file check (SQLite's "database disk image is
    malformed"), the tables are checked one by one to name the damaged ones.
    """
    try:
        rows = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
        problems = [] if rows == ["ok"] else rows
        return problems + [
            f"foreign key: table {row[0]} row {row[1]} -> {row[2]}"
            for row in conn.execute("PRAGMA foreign_key_check")
        ]
    except sqlite3.DatabaseError as error:
        if not getattr(error, "sqlite_errorname", "").startswith(_DAMAGE_CODES):
            raise
        try:
            return _table_problems(conn, "integrity_check") or [str(error)]
        except sqlite3.DatabaseError:  # the schema itself is unreadable
            return [str(error)]


def _migrate(conn: sqlite3.Connection, path: Path) -> int | None:
    from napari_lesion_harvest.store.schema import SCHEMA_VERSION

    version = schema_version(conn)
    if version == SCHEMA_VERSION:
        return None
    if 0 < version < SCHEMA_VERSION:
        from napari_lesion_harvest.store.backup import backup_path, copy_database

        copy_database(conn, backup_path(path.parent, label=f"v{version}"), source=path)
    return migrate(conn, path=str(path))


# --------------------------------------------------------------------- errors


def restore_hint(path: Path) -> str:
    """What a user does about the damaged project file ``path`` (ends error messages)."""
    folder = path.parent
    return (
        f"restore a backup: lesion-harvest restore {folder} BACKUP "
        f"(backups are in {folder / 'backups'})"
    )


@contextmanager
def translated(path: Path, action: str, *, damaged_hint: str | None = None) -> Iterator[None]:
    """Turn :mod:`sqlite3` errors into typed :class:`StoreError` s naming ``path``.

    ``damaged_hint`` ends the message of a damaged file (default: :func:`restore_hint`).
    """
    try:
        yield
    except StoreError:
        raise
    except sqlite3.Error as error:
        hint = restore_hint(path) if damaged_hint is None else damaged_hint
        raise _typed_error(error, path, action, hint) from error


def _typed_error(error: sqlite3.Error, path: Path, action: str, hint: str) -> StoreError:
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
    if name == "SQLITE_NOTADB" or "not a database" in text:
        return DamagedProjectError(
            f"{path} is not an SQLite database ({text}): it is damaged or not a harvest "
            f"project; {hint}"
        )
    if name.startswith(_DAMAGE_CODES) or "malformed" in text:
        return DamagedProjectError(f"{where}: the file is damaged ({text}); {hint}")
    if isinstance(error, sqlite3.IntegrityError):
        return InvalidValueError(f"{where}: {text}")
    return StoreError(f"{where}: {text}")
