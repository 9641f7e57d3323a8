"""The project's self-supervised LPG weights: one checkpoint file and its record.

Pretraining (:mod:`napari_lesion_harvest.lpg.pretrain`) writes each version to
a new file of :data:`PRETRAINED_DIR` (``lpg-<step>.pt``) with the package's
durable writer and records it in the audit log (action :data:`SAVED`, details =
the fields of :class:`PretrainedWeights`), in the transaction that checks that it
still holds the project's lock; then the older files go. :data:`DISCARDED`
withdraws them. The newest of these two entries says what the project has, so a
round never reads weights whose sha256 the project did not record, and a process
killed between writing a version and recording it leaves the recorded one intact.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from napari_lesion_harvest.store import rows
from napari_lesion_harvest.store.database import Database
from napari_lesion_harvest.store.lock import PRETRAINING, RoundLock

#: The folder of the weights, relative to the project folder.
PRETRAINED_DIR = "models/pretrained"
#: Audit actions: a durable version of the weights, and their withdrawal.
SAVED, DISCARDED = "pretrain.save", "pretrain.discard"


@dataclass(frozen=True)
class PretrainedWeights:
    """A recorded version of the project's pretrained LPG weights.

    Attributes
    ----------
    path : str
        The file, relative to the project folder.
    sha256 : str
        Hex digest of its bytes.
    size : int
        Bytes.
    step : int
        Optimiser steps done.
    total_steps : int
        Steps planned.
    seconds : float
        Training time of all runs together.
    config : dict
        The LPG configuration pretrained (``LPGConfig.to_dict()``).
    """

    path: str
    sha256: str
    size: int
    step: int
    total_steps: int
    seconds: float
    config: dict = field(default_factory=dict)

    @property
    def minutes(self) -> float:
        """Training time in minutes."""
        return self.seconds / 60

    def describe(self) -> str:
        """e.g. ``400 of 2000 steps, 12.5 min, LPG config lite
        (models/pretrained/lpg-0000400.pt)``."""
        return (
            f"{self.step} of {self.total_steps} steps, {self.minutes:.1f} min, LPG config "
            f"{self.config.get('name')} ({self.path})"
        )


class PretrainedStore:
    """The pretrained weights of one project (``HarvestProject.pretrained``).

    Parameters
    ----------
    db : Database
    folder : Path
        The project folder.
    """

    def __init__(self, db: Database, folder: Path):
        self._db = db
        self.folder = Path(folder)

    def file_for(self, step: int) -> Path:
        """Where the version at ``step`` is written (absolute)."""
        return self.folder / PRETRAINED_DIR / f"lpg-{int(step):07d}.pt"

    def prune(self, *, lock: RoundLock) -> None:
        """Remove every file of :data:`PRETRAINED_DIR` but the recorded version's
        (older versions, and what a killed run wrote but did not record)."""
        with self._db.read("reading the pretrained weights' record") as conn:
            lock.check(conn)
        current = self.current()
        keep = None if current is None else self.folder / current.path
        for path in (self.folder / PRETRAINED_DIR).glob("*"):
            if path.is_file() and path != keep:
                path.unlink(missing_ok=True)

    def lock(self) -> RoundLock:
        """The project's round lock, to hold while pretraining (a context manager):
        a round and pretraining never run at once."""
        return RoundLock(self._db, PRETRAINING)

    def current(self) -> PretrainedWeights | None:
        """The recorded weights, or None (never pretrained, or discarded)."""
        with self._db.read("reading the pretrained weights' record") as conn:
            row = conn.execute(
                "SELECT action, details FROM audit WHERE action IN (?, ?) ORDER BY id DESC "
                "LIMIT 1",
                (SAVED, DISCARDED),
            ).fetchone()
        if row is None or row[0] == DISCARDED:
            return None
        details = json.loads(row[1])
        known = {f.name for f in fields(PretrainedWeights)}
        return PretrainedWeights(**{k: v for k, v in details.items() if k in known})

    def record(self, weights: PretrainedWeights, *, lock: RoundLock, author: str) -> None:
        """Record ``weights``, just written durably, while ``lock`` is held."""
        with self._db.write("recording the pretrained weights") as conn:
            lock.check(conn)
            rows.append_audit(conn, author=author, action=SAVED, details=asdict(weights))
        self.prune(lock=lock)

    def discard(self, *, lock: RoundLock, author: str) -> PretrainedWeights | None:
        """Withdraw the recorded weights and remove their file; returns what was withdrawn
        (None: there was nothing to discard)."""
        found = self.current()
        if found is None:
            return None
        with self._db.write("discarding the pretrained weights") as conn:
            lock.check(conn)
            rows.append_audit(conn, author=author, action=DISCARDED, details=asdict(found))
        self.prune(lock=lock)
        return found
