"""Making a written file, or a folder's new entries, durable on disk."""

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
