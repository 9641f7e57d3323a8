"""What a project holds, as plain text a radiologist can hand on, and the dock's export.

:func:`project_counts` counts, per split, the volumes, the live RECIST marks
(original and expert), the harvested lesions of the latest finished round
(what :func:`~napari_lesion_harvest.store.export.export_annotations` exports:
harvested by the round and not rejected, or accepted by an expert) and the
expert verdicts; :func:`summary_text` lays them out with the rounds' Table I
(:func:`~napari_lesion_harvest.harvest.report.format_round_table`).
:func:`export_with_summary` writes the export and this summary beside it.
Qt-free; the dock runs the export in a worker thread.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from napari_lesion_harvest.durable import replace_text
from napari_lesion_harvest.store.schema import SPLITS
from napari_lesion_harvest.vocabulary import RoundStatus, Verdict

#: File the summary is written to beside an export.
SUMMARY_NAME = "summary.txt"
#: Export formats of the dock: check-box text -> ``export_annotations`` format.
EXPORT_FORMATS = {"CSV": "csv", "JSON": "json", "paper (MinedLesions.pkl)": "pickle"}


@dataclass
class SplitCounts:
    """Counts of one split (or of the whole project)."""

    volumes: int = 0
    original_marks: int = 0
    expert_marks: int = 0
    harvested: int = 0  # by the round, no verdict
    accepted: int = 0  # harvested lesions an expert accepted
    rejected: int = 0  # proposals an expert rejected


@dataclass
class ProjectCounts:
    """Per-split counts, the totals and the latest finished round."""

    splits: dict[str, SplitCounts] = field(default_factory=dict)
    total: SplitCounts = field(default_factory=SplitCounts)
    round_number: int | None = None

    @property
    def lesions(self) -> int:
        """Harvested lesions the export writes (harvested + accepted)."""
        return self.total.harvested + self.total.accepted


def project_counts(project) -> ProjectCounts:
    """Count marks, harvested lesions and verdicts per split (see the module notes)."""
    summaries = project.volume_summaries()
    split_of = {s.volume_id: s.split for s in summaries}
    counts = ProjectCounts(splits={split: SplitCounts() for split in SPLITS})
    for summary in summaries:
        part = counts.splits[summary.split]
        part.volumes += 1
        part.original_marks += summary.n_marks - summary.n_expert_marks
        part.expert_marks += summary.n_expert_marks
    counts.round_number = project.latest_done_round()
    if counts.round_number is not None:
        for stored in project.rounds.harvested_lesions(counts.round_number):
            part = counts.splits[split_of[stored.volume_id]]
            if stored.verdict is not None:
                part.accepted += 1
            else:
                part.harvested += 1
    rejected = Counter(
        split_of[project.proposal(v.proposal_id).volume_id]
        for v in project.verdicts()
        if v.verdict == Verdict.rejected
    )
    for split, n in rejected.items():
        counts.splits[split].rejected += n
    for part in counts.splits.values():
        for name in vars(counts.total):
            setattr(counts.total, name, getattr(counts.total, name) + getattr(part, name))
    return counts


def summary_text(project, *, counts: ProjectCounts | None = None) -> str:
    """The project's summary as fixed-width text (see the module notes)."""
    from napari_lesion_harvest.harvest.report import format_round_table, harvest_counts
    from napari_lesion_harvest.ui.worklist import split_name

    counts = counts or project_counts(project)
    total = counts.total
    lines = [
        f"Lesion Harvest project {Path(project.folder).name} ({project.folder})",
        f"summary of {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"{total.volumes} volumes; {total.original_marks + total.expert_marks} lesions marked "
        f"({total.original_marks} by original marks, {total.expert_marks} by experts); "
        f"{counts.lesions} harvested lesions"
        + (
            f" after round {counts.round_number} ({total.harvested} harvested by the rounds, "
            f"{total.accepted} accepted by an expert); {total.rejected} proposals rejected"
            if counts.round_number is not None
            else " (no round finished yet)"
        )
        + ".",
        "",
        f"{'split':<36}{'volumes':>8}{'marked':>8}{'harvested':>10}{'accepted':>9}{'rejected':>9}",
    ]
    for split, part in counts.splits.items():
        if part.volumes:
            name = f"{split_name(split)} ({split})"
            lines.append(_row(name, part))
    lines.append(_row("all volumes", total))
    lines += [
        "",
        "marked: RECIST marks, original and expert; harvested: what the export writes (harvested",
        "by the rounds and not rejected, or accepted); accepted: of those, accepted by an",
        "expert; rejected: proposals an expert rejected",
    ]
    done = [r for r in project.rounds.list() if r.status == RoundStatus.done]
    if done:
        last = done[-1].metrics
        lines += [
            "",
            f"Round {done[-1].number}: {harvest_counts(last)}.",
            "Table I on the held-out volumes V_H_test (P3D matching; R: the original marks,",
            "P_H,1..i: the lesions harvested by rounds 1 to i; R@80: recall at 80% precision):",
            format_round_table(done),
        ]
    return "\n".join(lines) + "\n"


def _row(name: str, part: SplitCounts) -> str:
    marked = part.original_marks + part.expert_marks
    harvested = part.harvested + part.accepted
    return (
        f"{name:<36}{part.volumes:>8}{marked:>8}{harvested:>10}{part.accepted:>9}"
        f"{part.rejected:>9}"
    )


@dataclass(frozen=True)
class ExportReport:
    """What the dock's export wrote, counted per kind."""

    folder: Path
    files: list[Path]
    round_number: int | None
    original_marks: int
    expert_marks: int
    harvested: int
    accepted: int

    def message(self) -> str:
        """The dock's sentence about the export."""
        lesions = self.harvested + self.accepted
        if self.round_number is None:
            where = "no harvested lesions (no round finished yet)"
        else:
            where = (
                f"{lesions} harvested lesions of round {self.round_number} ({self.harvested} "
                f"harvested by the rounds, {self.accepted} accepted by you)"
            )
        names = ", ".join(path.name for path in self.files)
        return (
            f"Exported {self.original_marks + self.expert_marks} marks ({self.original_marks} "
            f"original, {self.expert_marks} expert) and {where} to {self.folder}: {names}."
        )


def export_with_summary(project, folder: str | Path, *, formats) -> ExportReport:
    """Export the completed annotations (``formats`` of :data:`EXPORT_FORMATS`' values)
    and write :data:`SUMMARY_NAME` beside them (atomically)."""
    from napari_lesion_harvest.store.export import export_annotations

    with project:
        result = export_annotations(project, folder, formats=formats)
        counts = project_counts(project)
        text = summary_text(project, counts=counts)
    summary = replace_text(result.folder / SUMMARY_NAME, text)
    return ExportReport(
        folder=result.folder,
        files=[*result.files, summary],
        round_number=result.round_number,
        original_marks=counts.total.original_marks,
        expert_marks=counts.total.expert_marks,
        harvested=counts.total.harvested,
        accepted=counts.total.accepted,
    )
