"""Making a written file, or a folder's new entries, durable on disk; replacing a small
text file atomically and durably (no project imports, so anything may import it)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: str | Path) -> None:
    """Flush a file's data, or a folder's entries (a rename into it), to the disk.

    Never call it on ``project.sqlite`` or its ``-wal`` / ``-shm`` files: closing
    any descriptor of a file drops the SQLite locks this process holds on it
    (:mod:`napari_lesion_harvest.store.database`). A folder that cannot be
    opened (Windows) is skipped.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except IsADirectoryError:
        return
    except PermissionError:
        if Path(path).is_dir():
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably: a reader sees the old
    file or the whole new one, never a part, and the new one survives a power cut.

    The text goes to a hidden temporary file beside ``path``, is fsynced, renamed over
    ``path`` and the folder fsynced. Returns ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path
