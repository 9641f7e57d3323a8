"""The harvest project on disk: SQLite (WAL) + checkpoint files.

Import-light: nothing here imports torch (checkpoint functions import it when called).
"""

from napari_lesion_harvest.store.errors import (
    ChecksumMismatchError,
    DamagedProjectError,
    InvalidValueError,
    NotAProjectError,
    NotFoundError,
    ProjectInUseError,
    RoundLockedError,
    RoundStateError,
    SchemaTooNewError,
    StoreBusyError,
    StoreError,
    StoreWriteError,
)
from napari_lesion_harvest.store.project import HarvestProject
from napari_lesion_harvest.store.records import (
    BatchResult,
    CheckpointRef,
    DataBatch,
    MarkEntry,
    ProposalRow,
    ProposalUpdate,
    RoundRecord,
    RoundSnapshot,
    StageResult,
    StoredMark,
    StoredProposal,
    Verdict,
    VolumeOverlays,
    VolumeRecord,
    VolumeSummary,
)
from napari_lesion_harvest.store.rows import AuditEntry
from napari_lesion_harvest.store.schema import (
    ORIGINS,
    ROLES,
    ROUND_STATUSES,
    SCHEMA_VERSION,
    SPLITS,
)

__all__ = [
    "ORIGINS",
    "ROLES",
    "ROUND_STATUSES",
    "SCHEMA_VERSION",
    "SPLITS",
    "AuditEntry",
    "BatchResult",
    "CheckpointRef",
    "ChecksumMismatchError",
    "DamagedProjectError",
    "DataBatch",
    "HarvestProject",
    "InvalidValueError",
    "MarkEntry",
    "NotAProjectError",
    "NotFoundError",
    "ProjectInUseError",
    "ProposalRow",
    "ProposalUpdate",
    "RoundLockedError",
    "RoundRecord",
    "RoundSnapshot",
    "RoundStateError",
    "SchemaTooNewError",
    "StageResult",
    "StoreBusyError",
    "StoreError",
    "StoreWriteError",
    "StoredMark",
    "StoredProposal",
    "Verdict",
    "VolumeOverlays",
    "VolumeRecord",
    "VolumeSummary",
]
