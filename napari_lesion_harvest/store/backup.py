"""Checking, backing up and restoring a project file.

* :func:`copy_database` is the one way the store copies a project: SQLite's
  online backup API in one step, so the copy is the state of one read
  transaction, consistent while napari or a round writes (WAL readers do not
  block writers). The copy is a self-contained file (rollback journal, no
  ``-wal``), passes ``PRAGMA integrity_check``, and is fsynced and renamed
  into place, so a killed backup leaves no file under the backup's name.
  Backups (``lesion-harvest backup``, and the copy made before a schema
  migration) go to ``<project>/backups/project-YYYYMMDD-HHMMSS.sqlite``.
* :func:`check_project` runs the full ``integrity_check`` (``lesion-harvest check``).
* :func:`restore_project` replaces ``project.sqlite`` by a backup: see its docstring.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from napari_lesion_harvest.durable import fsync_path
from napari_lesion_harvest.store.database import (
    Database,
    check_file,
    file_key,
    full_check,
    is_open_here,
    translated,
)
from napari_lesion_harvest.store.errors import (
    DamagedProjectError,
    InvalidValueError,
    NotAProjectError,
    ProjectInUseError,
    RoundLockedError,
    SchemaTooNewError,
    StoreWriteError,
)
from napari_lesion_harvest.store.project import DATABASE_NAME
from napari_lesion_harvest.store.schema import APPLICATION_ID, SCHEMA_VERSION

BACKUPS_DIR = "backups"
#: What a user does about a damaged backup.
OTHER_BACKUP = "choose another backup"
#: Where a restore stages the backup's copy before swapping it in (removed by the swap).
STAGED_NAME = "project.sqlite.restoring"


@dataclass(frozen=True)
class RestoreResult:
    """What :func:`restore_project` did.

    Attributes
    ----------
    project_file : Path
        ``project.sqlite``, now the backup's content.
    kept_aside : Path or None
        The replaced file (``project-replaced-YYYYMMDD-HHMMSS.sqlite`` in the
        project folder); None when there was no file to replace.
    schema_version : int
        Schema version of the backup (an older one is migrated at the next open).
    """

    project_file: Path
    kept_aside: Path | None
    schema_version: int


def backup_path(folder: str | Path, *, label: str = "") -> Path:
    """A new file name ``<folder>/backups/project[-label]-YYYYMMDD-HHMMSS.sqlite``.

    A name taken already gets a counter (``...-2.sqlite``).
    """
    stem = "-".join(part for part in ("project", label, time.strftime("%Y%m%d-%H%M%S")) if part)
    return _unused(Path(folder) / BACKUPS_DIR, stem, ".sqlite")


def copy_database(conn: sqlite3.Connection, target: Path, *, source: Path) -> Path:
    """Copy the database of ``conn`` into the new file ``target`` (see the module docstring).

    Parameters
    ----------
    conn : sqlite3.Connection
        Source, outside a transaction; the caller holds it for the duration (no
        other thread uses it). The copy is made in one backup step, which is
        one read transaction.
    target : Path
        New file; its folder is created when missing.
    source : Path
        The file of ``conn`` (for error messages).

    Returns
    -------
    Path
        ``target``.

    Raises
    ------
    InvalidValueError
        ``target`` exists already (a backup is never overwritten).
    DamagedProjectError
        The copy fails ``integrity_check``: the source is damaged (no file is
        left under ``target``).
    StoreWriteError
        Writing the copy failed (no file is left under ``target``).
    sqlite3.Error
        From the backup itself (callers translate it with their file's name).
    """
    target = Path(target)
    if target.exists():
        raise InvalidValueError(f"{target} exists already; a backup is never overwritten")
    partial = target.with_name(f".{target.name}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.unlink(missing_ok=True)  # left by a killed backup
        copy = sqlite3.connect(partial, isolation_level=None)
        try:
            conn.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")
            problems = full_check(copy)
        finally:
            copy.close()
        if problems:
            raise DamagedProjectError(
                f"{source} is damaged: its copy fails the integrity check ({problems[0]}); "
                f"nothing was written to {target}"
            )
        fsync_path(partial)
        os.replace(partial, target)
        fsync_path(target.parent)
    except OSError as error:
        raise StoreWriteError(
            f"writing {target} failed ({error}); {source} is unchanged"
        ) from error
    finally:
        partial.unlink(missing_ok=True)  # gone once renamed into place
    return target


def check_project(folder: str | Path) -> list[str]:
    """Full ``integrity_check`` and foreign-key check of a project; problems (empty = ok).

    The file is read as it is: not migrated, and not refused for damage that
    opening a project refuses (the damage is what this reports).

    Raises
    ------
    NotAProjectError
        Missing, or a healthy SQLite database of another application.
    DamagedProjectError
        Empty, or not recognisable as an SQLite database (damaged header).
    """
    path = Path(folder) / DATABASE_NAME
    if is_open_here(path):
        db = Database(path, create=False)
        try:
            return db.integrity_check()
        finally:
            db.close()
    check_file(path, create=False)
    conn = _connect(path)
    try:
        with translated(path, "checking the project"):
            problems = full_check(conn)
            if not problems:
                _check_is_project(conn, path)
    finally:
        conn.close()
    return problems


def restore_project(folder: str | Path, backup: str | Path) -> RestoreResult:
    """Replace a project's ``project.sqlite`` by a backup, keeping the replaced file.

    Steps: the backup is checked (a harvest project of a schema this release
    reads), copied beside the project with :func:`copy_database` (which
    checks the copy's integrity), and swapped in with one atomic rename while
    the restore holds the project file exclusively. The replaced file (its
    WAL folded in first) stays as ``project-replaced-YYYYMMDD-HHMMSS.sqlite``
    in the project folder, as a hard link made before the swap, so a kill at
    any moment leaves ``project.sqlite`` either the old file or the restored
    one. (On a file system without hard links the old file is renamed aside
    instead, and a kill between the two renames leaves no ``project.sqlite``:
    run the restore again.)

    Refused while any program (napari, a round, another command) has the
    project open, and while a live round on another host holds the round lock
    (:mod:`~napari_lesion_harvest.store.lock`); a lock whose holder is gone
    does not block.

    Raises
    ------
    ProjectInUseError
        The project is open (in this process or another).
    RoundLockedError
        A live round holds the round lock.
    NotAProjectError, DamagedProjectError, SchemaTooNewError
        The backup is not a usable harvest project (nothing was changed).
    StoreWriteError
        The disk refused a write (full, read-only, ...).
    """
    folder = Path(folder)
    path = folder / DATABASE_NAME
    backup = Path(backup)
    if not folder.is_dir():
        raise NotAProjectError(f"{folder} is not a harvest project folder")
    if file_key(backup) is not None and file_key(backup) == file_key(path):
        raise InvalidValueError(f"{backup} is the project file itself, not a backup")
    if is_open_here(path):
        raise ProjectInUseError(f"{path} is open in this program; close it before restoring")
    version = check_backup(backup)
    staged = folder / STAGED_NAME
    staged.unlink(missing_ok=True)  # left by a killed restore
    source = _connect(backup)
    try:
        with translated(backup, "copying the backup", damaged_hint=OTHER_BACKUP):
            copy_database(source, staged, source=backup)
    finally:
        source.close()
    try:
        with translated(path, "restoring the project"), _exclusive(path) as folded:
            kept_aside = _keep_aside(path, folded=folded) if path.exists() else None
            os.replace(staged, path)
            fsync_path(folder)
    except OSError as error:
        raise StoreWriteError(
            f"restoring {path} failed ({error}); run the restore again (a replaced file is "
            f"kept in {folder} as project-replaced-*.sqlite)"
        ) from error
    finally:
        staged.unlink(missing_ok=True)  # still there when the restore was refused
    return RestoreResult(project_file=path, kept_aside=kept_aside, schema_version=version)


def check_backup(backup: Path) -> int:
    """Check that ``backup`` is a harvest project this release reads; returns its schema version.

    Raises
    ------
    NotAProjectError, DamagedProjectError, SchemaTooNewError
    """
    backup = Path(backup)
    if not backup.exists():
        raise NotAProjectError(f"{backup} does not exist")
    check_file(backup, create=False)
    conn = _connect(backup)
    try:
        with translated(backup, "reading the backup", damaged_hint=OTHER_BACKUP):
            version = _check_is_project(conn, backup)
    finally:
        conn.close()
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"{backup} has schema version {version}, but this release reads versions up to "
            f"{SCHEMA_VERSION}; restore it with a newer release"
        )
    return version


def _check_is_project(conn: sqlite3.Connection, path: Path) -> int:
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    if app_id != APPLICATION_ID:
        raise NotAProjectError(
            f"{path} is not a harvest project (SQLite application_id {app_id:#x})"
        )
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _connect(path: Path) -> sqlite3.Connection:
    """A plain connection to an existing file (no WAL switch, no migration)."""
    try:
        return sqlite3.connect(
            f"file:{quote(str(path))}?mode=rw", uri=True, isolation_level=None, timeout=0
        )
    except sqlite3.Error as error:
        raise NotAProjectError(f"cannot open {path}: {error}") from error


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[bool]:
    """Hold ``path`` so that no other connection, in any process, can use it.

    Yields whether the file is self-contained (its WAL folded in, or none):
    False when SQLite cannot read it (empty, damaged header), whose ``-wal``
    must then be set aside with it.
    """
    if not path.exists() or os.stat(path).st_size == 0:
        yield False  # no connection: SQLite would delete the -wal of an empty file
        return
    conn = _connect(path)
    try:
        # In exclusive locking mode, the first read of a WAL file takes an
        # exclusive lock, which fails while any other connection has the file open.
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            if getattr(error, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
                raise ProjectInUseError(
                    f"{path} is open in another program (napari, a round, or another "
                    "command); close it or wait for it to finish, then restore again"
                ) from error
            yield False
            return
        _refuse_live_round(conn, path)
        conn.execute("COMMIT")
        try:
            conn.execute("PRAGMA journal_mode = DELETE")  # folds the WAL into the file
        except sqlite3.DatabaseError:
            yield False
            return
        yield True
    finally:
        conn.close()


def _refuse_live_round(conn: sqlite3.Connection, path: Path) -> None:
    from napari_lesion_harvest.store.lock import is_stale, read_holder

    try:
        holder = read_holder(conn)
    except sqlite3.DatabaseError:
        return  # no lock table, or too damaged to read: the exclusive lock decided
    if holder is not None and not is_stale(holder, now=time.time()):
        conn.execute("ROLLBACK")
        raise RoundLockedError(
            f"{path}: {holder.describe()} holds the round lock; a restore now would leave "
            "it writing to the replaced file. Stop the round first, then restore again."
        )


def _keep_aside(path: Path, *, folded: bool) -> Path:
    """Keep the file to be replaced (and its ``-wal`` unless ``folded``) under a new name."""
    aside = _unused(path.parent, f"project-replaced-{time.strftime('%Y%m%d-%H%M%S')}", ".sqlite")
    wal = path.with_name(path.name + "-wal")
    try:
        os.link(path, aside)
    except OSError:  # no hard links on this file system
        os.rename(path, aside)
    if not folded and wal.exists():
        os.replace(wal, aside.with_name(aside.name + "-wal"))
    return aside


def _unused(folder: Path, stem: str, suffix: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    candidate, n = folder / f"{stem}{suffix}", 1
    while candidate.exists():
        n += 1
        candidate = folder / f"{stem}-{n}{suffix}"
    return candidate
