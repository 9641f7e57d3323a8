"""Model checkpoint files: atomic writes, sha256, restricted loading.

A checkpoint is written to a temporary file in the target folder, flushed and
fsynced, then renamed over the final name (``os.replace`` is atomic), and the
folder is fsynced, so a reader sees either the old file or the complete new
one. Loading checks the sha256 recorded in the project and unpickles with
``torch.load(..., weights_only=True)`` (tensors and plain containers only).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from napari_lesion_harvest.store.errors import ChecksumMismatchError, StoreWriteError

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checkpoint(state, path: str | Path) -> tuple[str, int]:
    """Save ``state`` (e.g. a ``state_dict``) with ``torch.save``, atomically.

    Parameters
    ----------
    state : object
        Anything ``torch.load(weights_only=True)`` can read back: tensors,
        numbers, strings, lists, tuples, dicts.
    path : str or Path
        Final file name; its folder is created if missing.

    Returns
    -------
    sha256 : str
    size : int
        Bytes written.

    Raises
    ------
    StoreWriteError
        The disk is full or refused the write; ``path`` is left as it was.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    tmp = Path(handle.name)
    try:
        with handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        digest = sha256_file(tmp)
        size = tmp.stat().st_size
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if _is_disk_error(error):
            raise StoreWriteError(
                f"could not write checkpoint {path}: {error}. The previous file (if any) "
                "is unchanged; free some disk space and retry."
            ) from error
        raise
    return digest, size


def load_checkpoint(path: str | Path, *, sha256: str, map_location="cpu"):
    """Load a checkpoint after checking its sha256 (``torch.load(weights_only=True)``).

    Parameters
    ----------
    path : str or Path
    sha256 : str
        Expected hex digest (recorded in the project).
    map_location : str or torch.device, optional

    Raises
    ------
    ChecksumMismatchError
        The file changed since it was recorded (corrupt or replaced).
    FileNotFoundError
        The file is missing.
    """
    import torch

    found = sha256_file(path)
    if found != sha256:
        raise ChecksumMismatchError(
            f"checkpoint {path} has sha256 {found}, but the project recorded {sha256}; "
            "the file is corrupt or was replaced"
        )
    return torch.load(path, map_location=map_location, weights_only=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # platforms that cannot open folders (Windows)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_disk_error(error: BaseException | None) -> bool:
    """Whether ``error`` or an exception it was raised from is an ``OSError``.

    torch reports a failed write as a ``RuntimeError`` raised while handling
    the underlying ``OSError`` (e.g. ``EFBIG``, ``ENOSPC``).
    """
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False
