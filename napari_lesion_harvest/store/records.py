"""Plain records that the store reads and writes: what its API takes and returns.

No SQL here: :mod:`~napari_lesion_harvest.store.rows` converts the records to and
from SQL rows.

Marks are :class:`~napari_lesion_harvest.geometry.RecistMark` and proposals
are :class:`~napari_lesion_harvest.geometry.Proposal3D`; the records below add
what the project knows about them (ids, origin, author, role, scores, times).
Times are POSIX seconds (UTC). Volume ids are the dataset's volume names
(``CTVolume.volume_id``, e.g. ``000001_01_01_103-115``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from napari_lesion_harvest.geometry import Proposal3D, RecistMark
from napari_lesion_harvest.vocabulary import Origin, Role, RoundStatus, Verdict


@dataclass(frozen=True)
class VolumeRecord:
    """One CT volume of the project.

    Attributes
    ----------
    volume_id : str
        The volume's name, unique in the project.
    reader : str
        Name of the reader that loads it (e.g. ``"deeplesion_png"``, ``"simpleitk"``).
    path : str
        Where the reader finds it (file or folder).
    split : str
        ``V_M`` (fully annotated), ``V_H`` (to harvest), ``V_H_test`` or ``V_D_test``.
    shape : tuple of int or None
        ``(Z, Y, X)`` when known.
    spacing : tuple of float or None
        ``(sz, sy, sx)`` in mm when known.
    display_window : tuple of float or None
        ``(low, high)`` HU.
    complete : bool
        The expert has marked every lesion of the volume.
    completed_by, completed_at : str or None, float or None
        Who completed it and when.
    imported_split : str
        The split given at import (restored when ``complete`` is withdrawn).
    attributes : dict
        Reader-specific facts (JSON-serialisable).
    """

    volume_id: str
    reader: str
    path: str
    split: str
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    display_window: tuple[float, float] | None = None
    complete: bool = False
    completed_by: str | None = None
    completed_at: float | None = None
    imported_split: str | None = None
    attributes: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class VolumeSummary:
    """One row of the volume table: a volume with its counts.

    Attributes
    ----------
    volume_id, split : str
    complete : bool
    n_marks : int
        Live (not deleted) marks of any origin.
    n_expert_marks : int
        Live marks drawn in the tool.
    n_proposals : int
        Proposals of the shown round on this volume.
    n_harvested : int
        Of those, the ones counted as lesions: accepted, or ``P_pos_H`` without a verdict.
    n_verdicts : int
        Of those, the ones with an expert verdict.
    """

    volume_id: str
    split: str
    complete: bool
    n_marks: int
    n_expert_marks: int
    n_proposals: int
    n_harvested: int
    n_verdicts: int


@dataclass(frozen=True)
class StoredMark:
    """A RECIST mark as saved in the project.

    Attributes
    ----------
    id : int
        Mark id (stable; used by edit, delete, restore).
    volume_id : str
    mark : RecistMark
        Slice ``z`` and both axes' endpoints in pixel coordinates.
    origin : str
        ``original`` (from the dataset) or ``expert`` (drawn in the tool).
    author : str
    created_at, edited_at : float
    deleted_at : float or None
        Set when soft-deleted.
    """

    id: int
    volume_id: str
    mark: RecistMark
    origin: str
    author: str
    created_at: float
    edited_at: float
    deleted_at: float | None = None

    @property
    def deleted(self) -> bool:
        """Whether the mark is soft-deleted."""
        return self.deleted_at is not None


@dataclass(frozen=True)
class MarkEntry:
    """A mark to add, with where it comes from.

    Attributes
    ----------
    volume_id : str
    mark : RecistMark
    source : str
        Where the mark comes from, for error messages (``"marks.csv, line 7"``);
        empty for marks made in a program.
    """

    volume_id: str
    mark: RecistMark
    source: str = ""


@dataclass(frozen=True)
class DataBatch:
    """Data entry written in one transaction by :meth:`HarvestProject.add_batch`.

    Attributes
    ----------
    volumes : sequence of VolumeRecord
        Volumes to add; one already in the project with the same reader, path,
        shape and spacing is left as it is.
    marks : sequence of MarkEntry
        Marks to add, on volumes of the project or of ``volumes``. A mark equal
        to a live mark of the same volume, slice and origin (or to one earlier
        in the batch) is not added again; one equal to a soft-deleted mark stays
        deleted.
    mark_origin : str
        ``original`` (dataset marks) or ``expert``.
    splits : mapping of str to str
        Volume id to its new split.
    complete : sequence of str
        Volumes the expert has fully annotated: training volumes join ``V_M``;
        held-out volumes (``V_H_test``, ``V_D_test``) keep their split, flagged
        complete (their marks are the evaluation's truth).
    """

    volumes: Sequence[VolumeRecord] = ()
    marks: Sequence[MarkEntry] = ()
    mark_origin: str = Origin.original
    splits: Mapping[str, str] = field(default_factory=dict)
    complete: Sequence[str] = ()


@dataclass
class BatchResult:
    """What :meth:`HarvestProject.add_batch` wrote and what was already there.

    Attributes
    ----------
    volumes_added, volumes_present : list of str
        Volume ids added, and those already in the project (same data).
    marks_added : list of int
        Ids of the new marks.
    marks_present : int
        Marks of the batch equal to a live mark (or to an earlier mark of the batch).
    marks_kept_deleted : list of int
        Ids of soft-deleted marks that the batch repeats; they stay deleted.
    split_changed, split_unchanged : list of str
        Volumes moved to their new split, and those already in it.
    completed, already_complete, held_out : list of str
        Training volumes now complete (moved to ``V_M``), volumes complete before,
        and held-out volumes now flagged complete (their split kept).
    """

    volumes_added: list[str] = field(default_factory=list)
    volumes_present: list[str] = field(default_factory=list)
    marks_added: list[int] = field(default_factory=list)
    marks_present: int = 0
    marks_kept_deleted: list[int] = field(default_factory=list)
    split_changed: list[str] = field(default_factory=list)
    split_unchanged: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    already_complete: list[str] = field(default_factory=list)
    held_out: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StoredVerdict:
    """An expert's decision on a proposal; it outranks the classifier in later rounds.

    Attributes
    ----------
    proposal_id : int
    verdict : str
        ``accepted`` or ``rejected``.
    author : str
    at : float
    """

    proposal_id: int
    verdict: str
    author: str
    at: float


@dataclass(frozen=True)
class ProposalRow:
    """A 3D proposal with its role and scores, as a round writes it.

    Attributes
    ----------
    volume_id : str
    proposal : Proposal3D
        Per-slice ``xyxy`` boxes and LPG scores (stored as float32, slices as int32).
        ``proposal.meta`` is saved as JSON when not empty.
    role : str
        One of ``P_RM``, ``P_neg_M``, ``P_RH``, ``P_pos_H``, ``P_neg_H``, ``candidate``.
    s_c, s_gc : float or None
        Classifier score and lesion score ``s_g * s_c`` once known.
    in_pool : bool
        Add the proposal to this round's pool (``P_i``).
    """

    volume_id: str
    proposal: Proposal3D
    role: str = Role.candidate
    s_c: float | None = None
    s_gc: float | None = None
    in_pool: bool = False


@dataclass(frozen=True)
class StoredProposal:
    """A proposal read back from the project.

    Attributes
    ----------
    id : int
    round_number : int
    volume_id : str
    proposal : Proposal3D
        Per-slice boxes and scores (float32 precision).
    role : str
    s_g : float
        Highest per-slice score, as written.
    s_c, s_gc : float or None
    stage : str
        Round stage that wrote it.
    box_3d : tuple of float
        ``xyzxyz`` box ``(x1, y1, z1, x2, y2, z2)``.
    verdict : StoredVerdict or None
        The expert's verdict, if any.
    """

    id: int
    round_number: int
    volume_id: str
    proposal: Proposal3D
    role: str
    s_g: float
    s_c: float | None
    s_gc: float | None
    stage: str
    box_3d: tuple[float, float, float, float, float, float]
    verdict: StoredVerdict | None = None

    @property
    def is_lesion(self) -> bool:
        """Counted as a lesion: accepted, or harvested (``P_pos_H``) and not rejected."""
        if self.verdict is not None:
            return self.verdict.verdict == Verdict.accepted
        return self.role == Role.P_pos_H


@dataclass(frozen=True)
class ProposalUpdate:
    """A later stage's change to an already written proposal (role and scores)."""

    proposal_id: int
    role: str
    s_c: float | None = None
    s_gc: float | None = None


@dataclass(frozen=True)
class CheckpointRef:
    """A model checkpoint file in the project's ``models/`` folder.

    Attributes
    ----------
    name : str
        Role of the model in its round (e.g. ``"lpg"``, ``"lpc"``).
    path : str
        Path relative to the project folder.
    sha256 : str
        Hex digest of the file's bytes.
    size : int
        Bytes.
    """

    name: str
    path: str
    sha256: str
    size: int


@dataclass
class StageResult:
    """Everything one round stage writes, committed in one transaction.

    Attributes
    ----------
    proposals : iterable of ProposalRow
        New proposals (consumed lazily inside the transaction).
    updates : sequence of ProposalUpdate
        Role/score changes of proposals already in this round.
    pool_carry : sequence of int
        Ids of earlier proposals carried into this round's pool.
    metrics : mapping
        Merged into the round's metrics JSON (keys of this stage replace older ones).
    checkpoints : sequence of CheckpointRef
        Checkpoint files (already written with ``save_checkpoint``) to register.
    """

    proposals: Iterable[ProposalRow] = ()
    updates: Sequence[ProposalUpdate] = ()
    pool_carry: Sequence[int] = ()
    metrics: Mapping = field(default_factory=dict)
    checkpoints: Sequence[CheckpointRef] = ()


@dataclass(frozen=True)
class RoundRecord:
    """A harvest round.

    Attributes
    ----------
    number : int
        1, 2, ... in creation order.
    status : str
        ``queued``, ``running``, ``done``, ``failed`` or ``cancelled``.
    stage : str or None
        Last stage whose results are committed.
    completed_stages : tuple of str
        Every committed stage, in commit order.
    config, metrics : dict
    created_at, started_at, finished_at : float or None
    error : str or None
        Why it failed, when it did.
    checkpoints : tuple of CheckpointRef
    """

    number: int
    status: str
    stage: str | None
    completed_stages: tuple[str, ...]
    config: dict
    metrics: dict
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    checkpoints: tuple[CheckpointRef, ...] = ()

    @property
    def resumable(self) -> bool:
        """A failed round can be resumed after its last committed stage."""
        return self.status == RoundStatus.failed


@dataclass(frozen=True)
class VolumeOverlays:
    """Everything drawn over one volume.

    Attributes
    ----------
    volume : VolumeRecord
    marks : list of StoredMark
        Live marks (and deleted ones when asked).
    proposals : list of StoredProposal
        Proposals of the shown round, each with its verdict.
    round_number : int or None
        The round shown (None when no round has results).
    """

    volume: VolumeRecord
    marks: list[StoredMark]
    proposals: list[StoredProposal]
    round_number: int | None


@dataclass(frozen=True)
class RoundSnapshot:
    """A round's inputs, frozen when the round starts (and reused when it resumes).

    Attributes
    ----------
    round_number : int
    config : dict
    taken_at : float
    volumes : dict of str to list of VolumeRecord
        Volumes by split (``V_M``, ``V_H``, ``V_H_test``, ``V_D_test``).
    marks : dict of str to list of StoredMark
        Live marks by volume id (original and expert).
    verdicts : list of StoredProposal
        Every proposal (of any earlier round) with an expert verdict, with
        that verdict as it was when the round started; they outrank the classifier.
    previous_round : int or None
        The last done round before this one.
    previous_pool : list of StoredProposal
        The pool ``P_(i-1)`` of the previous round (empty in round 1).
    completed_stages : tuple of str
        Stages already committed (non-empty when resuming).
    """

    round_number: int
    config: dict
    taken_at: float
    volumes: dict[str, list[VolumeRecord]]
    marks: dict[str, list[StoredMark]]
    verdicts: list[StoredProposal]
    previous_round: int | None
    previous_pool: list[StoredProposal]
    completed_stages: tuple[str, ...] = ()

    def marks_of(self, volume_id: str) -> list[RecistMark]:
        """The RECIST marks of one volume (empty when it has none)."""
        return [stored.mark for stored in self.marks.get(volume_id, [])]


@dataclass(frozen=True)
class AuditEntry:
    """One line of the append-only audit log.

    Attributes
    ----------
    id : int
    at : float
    author : str
    action : str
        e.g. ``mark.add``, ``mark.edit``, ``mark.delete``, ``mark.restore``,
        ``verdict.set``, ``volume.complete``, ``volume.split``, ``round.cancel``.
    volume_id : str or None
    target_id : int or None
        Mark id, proposal id or round number.
    details : dict
    """

    id: int
    at: float
    author: str
    action: str
    volume_id: str | None
    target_id: int | None
    details: dict
