"""The project's self-supervised weights: per network (the LPG's trunk, the LPC's view
trunks) one checkpoint file and its record.

Pretraining a network of :data:`NETWORKS` (:mod:`napari_lesion_harvest.lpg.pretrain`,
:mod:`napari_lesion_harvest.lpc.pretrain`) writes each version to a new file of
:data:`PRETRAINED_DIR` (``lpg-<step>.pt``, ``lpc-<step>.pt``) with the package's
durable writer and records it in the audit log (action :data:`SAVED`, details =
the fields of :class:`PretrainedWeights`, ``network`` among them), in the
transaction that checks that it still holds the project's lock; then the older
files go. :data:`DISCARDED` withdraws a network's weights. The newest of these two
entries of a network says what the project has for it, so a round never reads
weights whose sha256 the project did not record, and a process killed between
writing a version and recording it leaves the recorded one intact. A record
without ``network`` (as earlier versions wrote them) is the LPG's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from napari_lesion_harvest.lpg.config import RESTORATION
from napari_lesion_harvest.store import rows
from napari_lesion_harvest.store.database import Database
from napari_lesion_harvest.store.lock import PRETRAINING, RoundLock

#: The folder of the weights, relative to the project folder.
PRETRAINED_DIR = "models/pretrained"
#: Audit actions: a durable version of the weights, and their withdrawal.
SAVED, DISCARDED = "pretrain.save", "pretrain.discard"
#: The networks pretrained, and the one a record without ``network`` belongs to (the first).
NETWORKS = ("lpg", "lpc")


@dataclass(frozen=True)
class PretrainedWeights:
    """A recorded version of a network's pretrained weights in the project.

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
        The configuration pretrained: the LPG's (``LPGConfig.to_dict()``) or the LPC's
        (``ProposalClassifier.config``).
    network : {"lpg", "lpc"}
    pretext : str
        What the weights learnt from (:data:`~napari_lesion_harvest.lpg.config.PRETEXTS`;
        the LPC's trunks: ``restoration``).
    """

    path: str
    sha256: str
    size: int
    step: int
    total_steps: int
    seconds: float
    config: dict = field(default_factory=dict)
    network: str = NETWORKS[0]
    pretext: str = RESTORATION

    @property
    def minutes(self) -> float:
        """Training time in minutes."""
        return self.seconds / 60

    @property
    def architecture(self) -> str:
        """What was pretrained, e.g. ``LPG config lite, restoration pretext`` or ``LPC
        multiview, width lite, 64 px patches``."""
        if self.network == "lpc":
            c = self.config
            return (
                f"LPC {c.get('variant')}, width {c.get('width')}, {c.get('patch_size')} px patches"
            )
        return f"LPG config {self.config.get('name')}, {self.pretext} pretext"

    def describe(self) -> str:
        """e.g. ``400 of 2000 steps, 12.5 min, LPG config lite, restoration pretext
        (models/pretrained/lpg-0000400.pt)``."""
        return (
            f"{self.step} of {self.total_steps} steps, {self.minutes:.1f} min, "
            f"{self.architecture} ({self.path})"
        )


class PretrainedStore:
    """The pretrained weights of one project (``HarvestProject.pretrained``), of every
    network of :data:`NETWORKS`.

    Parameters
    ----------
    db : Database
    folder : Path
        The project folder.
    """

    def __init__(self, db: Database, folder: Path):
        self._db = db
        self.folder = Path(folder)

    def file_for(self, step: int, network: str = NETWORKS[0]) -> Path:
        """Where ``network``'s version at ``step`` is written (absolute)."""
        return self.folder / PRETRAINED_DIR / f"{_checked(network)}-{int(step):07d}.pt"

    def prune(self, *, lock: RoundLock) -> None:
        """Remove every file of :data:`PRETRAINED_DIR` but the recorded versions' (older
        versions, and what a killed run wrote but did not record)."""
        with self._db.read("reading the pretrained weights' record") as conn:
            lock.check(conn)
        keep = {self.folder / w.path for w in map(self.current, NETWORKS) if w is not None}
        for path in (self.folder / PRETRAINED_DIR).glob("*"):
            if path.is_file() and path not in keep:
                path.unlink(missing_ok=True)

    def lock(self) -> RoundLock:
        """The project's round lock, to hold while pretraining (a context manager):
        a round and pretraining never run at once."""
        return RoundLock(self._db, PRETRAINING)

    def current(self, network: str = NETWORKS[0]) -> PretrainedWeights | None:
        """``network``'s recorded weights, or None (never pretrained, or discarded)."""
        _checked(network)
        known = {f.name for f in fields(PretrainedWeights)}
        with self._db.read("reading the pretrained weights' record") as conn:
            entries = conn.execute(
                "SELECT action, details FROM audit WHERE action IN (?, ?) ORDER BY id DESC",
                (SAVED, DISCARDED),
            )
            for action, text in entries:
                details = json.loads(text)
                if details.get("network", NETWORKS[0]) != network:
                    continue
                if action == DISCARDED:
                    return None
                return PretrainedWeights(**{k: v for k, v in details.items() if k in known})
        return None

    def record(self, weights: PretrainedWeights, *, lock: RoundLock, author: str) -> None:
        """Record ``weights``, just written durably, while ``lock`` is held."""
        with self._db.write("recording the pretrained weights") as conn:
            lock.check(conn)
            rows.append_audit(conn, author=author, action=SAVED, details=asdict(weights))
        self.prune(lock=lock)

    def discard(
        self, network: str = NETWORKS[0], *, lock: RoundLock, author: str
    ) -> PretrainedWeights | None:
        """Withdraw ``network``'s recorded weights and remove their file; returns what was
        withdrawn (None: there was nothing to discard)."""
        found = self.current(network)
        if found is None:
            return None
        with self._db.write("discarding the pretrained weights") as conn:
            lock.check(conn)
            rows.append_audit(conn, author=author, action=DISCARDED, details=asdict(found))
        self.prune(lock=lock)
        return found


def _checked(network: str) -> str:
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {NETWORKS}, got {network!r}")
    return network
