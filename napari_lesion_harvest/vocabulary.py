"""The project's vocabulary: volume splits, mark origins, proposal roles, verdicts,
round statuses and round stages.

Each name is a ``str`` enum whose members are the strings the project
stores (SQLite), exports (JSON, CSV) and shows: ``Role.P_RM == Role.P_RM`` and
``f"{Role.P_RM}" == Role.P_RM``, so a member goes wherever its string goes and a
string read back from a file compares equal to its member. The names follow
the paper (Cai et al., "Lesion Harvesting"); ``docs/glossary.md`` maps them to
its symbols. The schema's CHECK constraints (:mod:`napari_lesion_harvest.store.schema`)
allow exactly the values of the splits, origins, roles, verdicts and round statuses.
"""

from __future__ import annotations

from enum import Enum


class _Names(str, Enum):
    """A ``str`` enum whose members print and format as their value.

    :class:`enum.StrEnum` does the same from Python 3.11; the package supports 3.10.
    """

    def __str__(self) -> str:
        return self.value

    def __format__(self, format_spec: str) -> str:
        return format(self.value, format_spec)


class Split(_Names):
    """The part of the dataset a volume belongs to."""

    #: Fully annotated: every lesion is marked; the rounds learn from it.
    V_M = "V_M"
    #: Incompletely marked: the rounds harvest its missed lesions.
    V_H = "V_H"
    #: Held out to evaluate harvesting; complete ones hold the truth.
    V_H_test = "V_H_test"
    #: Held out to evaluate the detector.
    V_D_test = "V_D_test"


class Origin(_Names):
    """Where a RECIST mark comes from."""

    #: Imported with the dataset (e.g. DeepLesion's DL_info.csv).
    original = "original"
    #: Drawn by an expert in the project.
    expert = "expert"


class Role(_Names):
    """What a round decided about a 3D proposal (the paper's proposal sets)."""

    #: Hits a mark of a fully annotated volume (V_M): a lesion.
    P_RM = "P_RM"
    #: Hits no mark of a fully annotated volume (V_M): not a lesion.
    P_neg_M = "P_neg_M"
    #: Hits a mark of a volume to harvest (V_H): a lesion.
    P_RH = "P_RH"
    #: Harvested: its lesion score s_gc passed the round's threshold.
    P_pos_H = "P_pos_H"
    #: Hard negative of V_H: high objectness s_g, not harvested.
    P_neg_H = "P_neg_H"
    #: Scored by the classifier, neither harvested nor a hard negative.
    candidate = "candidate"


class Verdict(_Names):
    """An expert's decision on a proposal."""

    accepted = "accepted"
    rejected = "rejected"


class RoundStatus(_Names):
    """Where a harvest round stands."""

    #: Created; no stage has run yet.
    queued = "queued"
    #: A process holds the round lock and runs its stages.
    running = "running"
    #: Every stage committed: its results are the project's latest round.
    done = "done"
    #: Stopped or interrupted; it resumes after its last committed stage.
    failed = "failed"
    #: Ended for good: stopped by a user, or inputs that cannot give a result.
    cancelled = "cancelled"


class Stage(_Names):
    """The stages of a harvest round, in the order they run."""

    #: Train the lesion proposal generator (round 1) or fine-tune it with HNSL.
    train_lpg = "train_lpg"
    #: Detect on every slice and stack 2D boxes into 3D proposals.
    scan = "scan"
    #: Split proposals by the marks: P_RM, P_neg_M (V_M) and P_RH (V_H).
    verify = "verify"
    #: Fit the lesion proposal classifier; score V_M for the harvest threshold.
    train_lpc = "train_lpc"
    #: Score V_H, harvest P_pos_H and mine hard negatives P_neg_H.
    harvest = "harvest"
    #: Evaluate the round on the held-out volumes (V_H_test).
    evaluate = "evaluate"
