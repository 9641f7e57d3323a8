"""Download torchvision's pretrained weight files into torch's hub cache, verified.

Only :func:`fetch_weights` (``lesion-harvest weights fetch``) opens a URL in
this package, and only when the user runs it; the models read these files
from the cache (:func:`~napari_lesion_harvest.lpg.model.find_imagenet_weights`,
:func:`~napari_lesion_harvest.lpc.models.find_pretrained`) and never download.

Each file is pinned by its full sha256 and size (:data:`IMAGENET`); its
torchvision name carries the first hex digits of that sha256, torch.hub's
``check_hash`` convention, which :class:`WeightFile` checks too. A download is
written to a temporary file in the cache folder, hashed as it arrives, fsynced,
and renamed to its name only when every file of the set has arrived whole
and verified: a failed, cut or corrupt download leaves nothing at any final
path. A file already present and verified is not downloaded again; one present
but different is refused, left as it is.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from napari_lesion_harvest.durable import fsync_path
from napari_lesion_harvest.progress import Progress, no_progress
from napari_lesion_harvest.store.checkpoints import CHECKPOINT_MODE, sha256_file

#: Where torchvision publishes its weight files.
DEFAULT_URL_BASE = "https://download.pytorch.org/models/"
#: Seconds a connection may stay silent before the download is given up.
DOWNLOAD_TIMEOUT_S = 60.0
#: The hash part of a torchvision file name (torch.hub's ``HASH_REGEX``).
NAME_HASH = re.compile(r"-([a-f0-9]*)\.")

_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightFile:
    """One published weight file, pinned.

    Attributes
    ----------
    name : str
        File name at the URL base and in the cache; its ``-HEX.`` part is the
        start of ``sha256``.
    sha256 : str
        Full hex sha256 of the file's bytes.
    size : int
        Bytes.
    model : str
        What it holds and who reads it, for messages.
    """

    name: str
    sha256: str
    size: int
    model: str

    def __post_init__(self):
        match = NAME_HASH.search(self.name)
        if match is None or not self.sha256.startswith(match.group(1)):
            raise ValueError(
                f"weight file {self.name}: its name does not carry the start of its sha256 "
                f"{self.sha256}"
            )


#: torchvision's ImageNet files that the ``paper`` networks start from, by the
#: names :data:`~napari_lesion_harvest.lpg.model.DENSENET121_FILE` and
#: :data:`~napari_lesion_harvest.lpc.models.PRETRAINED_FILES` look for (this
#: module does not import torch). The sha256 values are those published with the
#: files' names by projects that pin them; each starts with the name's hex
#: digits, as torch.hub checks.
IMAGENET: tuple[WeightFile, ...] = (
    WeightFile(
        "densenet121-a639ec97.pth",
        "a639ec97d7c33b07ae66f0b5fb7d0192f95a3b11b7576c66c0126c2a727c4395",
        32_342_954,
        "DenseNet-121 on ImageNet (the paper LPG's trunk)",
    ),
    WeightFile(
        "resnet18-f37072fd.pth",
        "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec",
        46_830_571,
        "ResNet-18 on ImageNet (the paper LPC's trunks)",
    ),
)
#: torchvision's Kinetics-400 file that the ``3d`` LPC variant starts from, by the
#: name :data:`~napari_lesion_harvest.lpc.models.PRETRAINED_FILES` looks for; its
#: sha256 and size as pinned by projects that use it, as for :data:`IMAGENET`.
KINETICS: tuple[WeightFile, ...] = (
    WeightFile(
        "r3d_18-b3b3357e.pth",
        "b3b3357ead25631ec9c57362ff2128a92d0427e01e2cd184951a44380c3f2e9d",
        133_546_016,
        "R3D-18 on Kinetics-400 (the 3d LPC variant's trunk)",
    ),
)
#: Weight sets by the name ``lesion-harvest weights fetch`` takes.
WEIGHT_SETS: dict[str, tuple[WeightFile, ...]] = {"imagenet": IMAGENET, "kinetics": KINETICS}


class WeightsFetchError(ValueError):
    """A weight file that could not be fetched or verified; the message names it and why."""


@dataclass(frozen=True)
class Fetched:
    """A verified file in the cache.

    Attributes
    ----------
    file : WeightFile
    path : Path
    downloaded : bool
        False when it was already there.
    """

    file: WeightFile
    path: Path
    downloaded: bool


def default_weights_folder() -> Path:
    """torch's hub checkpoint cache, where the models look: ``torch.hub.get_dir()/checkpoints``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def fetch_weights(
    files: Sequence[WeightFile],
    *,
    url_base: str = DEFAULT_URL_BASE,
    dest: str | os.PathLike | None = None,
    report: Callable[[str], None] = lambda line: None,
    progress: Progress = no_progress,
) -> list[Fetched]:
    """Put ``files`` into ``dest``, verified; download only those not there yet.

    Parameters
    ----------
    files : sequence of WeightFile
        The pinned files (e.g. :data:`IMAGENET`).
    url_base : str
        URL of the folder that holds them (``http(s)://`` or ``file://``); a
        file's URL is ``url_base`` + its name.
    dest : path, optional
        Folder to put them in (default :func:`default_weights_folder`); created
        when missing.
    report : callable
        ``report(line)`` for each file present, being downloaded, or verified.
    progress : Progress
        ``progress(name, bytes_received, size)`` as each downloading file's bytes
        arrive (stage: the file's name), from 0 to its pinned size.

    Returns
    -------
    list of Fetched
        One per file, in the order of ``files``.

    Raises
    ------
    WeightsFetchError
        A file in ``dest`` that is not the pinned one (left as it is; nothing
        was downloaded), or a download that failed, was cut short or is not
        the pinned file (no file of the set was placed).
    """
    folder = Path(dest) if dest is not None else default_weights_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WeightsFetchError(f"cannot create the weights folder {folder}: {error}") from error
    present = [file for file in files if (folder / file.name).exists()]
    for file in present:
        _check_present(file, folder / file.name)
        report(f"{file.name}: already present and verified, {folder / file.name}")
    missing = [file for file in files if file not in present]
    downloads: dict[str, Path] = {}
    try:
        for file in missing:
            url = url_base.rstrip("/") + "/" + file.name
            report(f"{file.name}: downloading {url} ({file.size / 1e6:.1f} MB)")
            downloads[file.name] = _download(file, url, folder, progress)
        for file in missing:
            os.replace(downloads.pop(file.name), folder / file.name)
            report(f"{file.name}: verified (sha256 {file.sha256}), {folder / file.name}")
    finally:
        for partial in downloads.values():
            partial.unlink(missing_ok=True)
    if missing:
        fsync_path(folder)
    return [Fetched(file, folder / file.name, file in missing) for file in files]


def _check_present(file: WeightFile, path: Path) -> None:
    """Refuse a file at ``path`` that is not ``file``."""
    try:
        size = path.stat().st_size
        digest = sha256_file(path) if size == file.size else None
    except OSError as error:
        raise WeightsFetchError(f"{path} cannot be read: {error}") from error
    if digest != file.sha256:
        found = f"sha256 {digest}" if digest else f"{size} bytes, not {file.size}"
        raise WeightsFetchError(
            f"{path} is not torchvision's {file.name} ({found}); move it away and run "
            "again (nothing was downloaded)"
        )


def _download(file: WeightFile, url: str, folder: Path, progress: Progress) -> Path:
    """Download ``url`` into a temporary file in ``folder`` and verify it as ``file``.

    ``progress(file.name, bytes_received, file.size)`` follows each chunk.

    Returns the temporary file, fsynced; removes it and raises
    :class:`WeightsFetchError` when the download fails or is not ``file``.
    """
    handle = tempfile.NamedTemporaryFile(
        dir=folder, prefix=f".{file.name}.", suffix=".partial", delete=False
    )
    partial = Path(handle.name)
    digest = hashlib.sha256()
    received = 0
    try:
        with handle, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            progress(file.name, received, file.size)
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                if received > file.size:
                    raise WeightsFetchError(f"more than the {file.size} bytes expected")
                digest.update(chunk)
                handle.write(chunk)
                progress(file.name, received, file.size)
            handle.flush()
            os.chmod(handle.fileno(), CHECKPOINT_MODE)
            os.fsync(handle.fileno())
        if received != file.size:
            raise WeightsFetchError(f"{received} of {file.size} bytes arrived (cut short)")
        if digest.hexdigest() != file.sha256:
            raise WeightsFetchError(
                f"sha256 {digest.hexdigest()}, not the pinned {file.sha256} (a corrupt or "
                "different file)"
            )
    except BaseException as error:
        partial.unlink(missing_ok=True)
        if isinstance(error, urllib.error.HTTPError):
            reason = f"HTTP {error.code} {error.reason}"
        elif isinstance(error, urllib.error.URLError):
            reason = str(error.reason)
        elif isinstance(error, OSError | http.client.HTTPException | ValueError):
            reason = str(error) or type(error).__name__
        else:
            raise
        raise WeightsFetchError(
            f"{file.name} from {url}: {reason}; nothing was placed in {folder}"
        ) from error
    return partial
