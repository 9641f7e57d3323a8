"""Model checkpoint files: the package's one writer and one reader.

:func:`write_checkpoint` writes every checkpoint file (LPG, LPC, any state a
round keeps): a temporary file in the target folder is written, flushed,
given mode :data:`CHECKPOINT_MODE` and fsynced, then renamed over the final
name (``os.replace`` is atomic), and the folder is fsynced. A reader sees
either the old file or the complete new one, and when the function returns the
new file survives a crash or a power cut; a project records the sha256 it
returns only then.

:func:`load_checkpoint` reads a file once, checks the bytes against the sha256
the project recorded (when there is a record) and unpickles those same bytes
with ``torch.load(weights_only=True)`` (tensors and plain containers only; no
code runs from the file).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

from napari_lesion_harvest.durable import fsync_path
from napari_lesion_harvest.store.errors import ChecksumMismatchError, StoreError, StoreWriteError

#: Mode of every checkpoint file: the owner writes, everyone who may enter the
#: project folder reads, as for ``project.sqlite`` under the usual umask (022);
#: the folder's own permissions decide who that is.
CHECKPOINT_MODE = 0o644

_CHUNK = 1 << 20


class CheckpointError(StoreError, ValueError):
    """A checkpoint file that is missing or is not a readable weights-only checkpoint
    (of the expected kind); the message names the file."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checkpoint(state, path: str | Path) -> tuple[str, int]:
    """Save ``state`` with ``torch.save``, atomically and durably.

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
        Hex digest of the bytes on disk.
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
            os.chmod(handle.fileno(), CHECKPOINT_MODE)
            os.fsync(handle.fileno())
        digest = sha256_file(tmp)
        size = tmp.stat().st_size
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if _is_disk_error(error):
            raise StoreWriteError(
                f"could not write checkpoint {path}: {error}. The previous file (if any) "
                "is unchanged; free some disk space and retry."
            ) from error
        raise
    return digest, size


def load_checkpoint(path: str | Path, *, sha256: str | None, map_location="cpu"):
    """Read a checkpoint, check its sha256, and unpickle it weights-only.

    Parameters
    ----------
    path : str or Path
    sha256 : str or None
        The hex digest the project recorded for the file; None for a file
        outside a project (nothing to check it against).
    map_location : str or torch.device, optional

    Returns
    -------
    object
        What was saved: tensors, numbers, strings and containers of them.

    Raises
    ------
    ChecksumMismatchError
        The file is not the one the project recorded (truncated, corrupt or
        replaced); it was not unpickled.
    CheckpointError
        The file is missing, unreadable, or holds more than weights (code,
        other classes) or no checkpoint at all.
    """
    import torch

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as error:
        raise CheckpointError(f"checkpoint {path} cannot be read: {error}") from error
    if sha256 is not None:
        found = hashlib.sha256(data).hexdigest()
        if found != sha256:
            raise ChecksumMismatchError(
                f"checkpoint {path} is not the file the project recorded (sha256 {found}, "
                f"recorded {sha256}, {len(data)} bytes): it is truncated, corrupt or was "
                "replaced, and was not loaded"
            )
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded: {_torch_reason(error)}"
        ) from error


def _torch_reason(error: Exception) -> str:
    """One line from what ``torch.load(weights_only=True)`` raised (its messages run over
    several lines and advise loading without ``weights_only``, which this package never does)."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = text.split(marker, 1)[1].split("Check the documentation", 1)[0]
        return f"it holds more than tensors and plain values ({' '.join(detail.split())})"
    return " ".join(text.split()).split(". ")[0]


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
