"""Builders of real harvest projects for the tests: marks, volume records, a new project,
and rounds written stage by stage through the store's own round API."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from napari_lesion_harvest.geometry import Proposal3D, RecistMark
from napari_lesion_harvest.store import (
    HarvestProject,
    ProposalRow,
    ProposalUpdate,
    RoundSnapshot,
    StageResult,
    VolumeRecord,
)
from napari_lesion_harvest.store.lock import RoundLock


def recist_mark(z: int = 3, *, x: float = 10.0, y: float = 10.0) -> RecistMark:
    """A RECIST mark on slice ``z``: long axis (x, y)-(x + 20, y), short axis
    (x + 10, y - 5)-(x + 10, y + 5), in pixels."""
    return RecistMark.from_measurement_coordinates(
        [x, y, x + 20, y, x + 10, y - 5, x + 10, y + 5], z=z
    )


def synthetic_volume(volume_id: str, split: str = "V_H", **fields) -> VolumeRecord:
    """A volume record without an image file (reader ``synthetic``, path ``-``);
    ``fields``: the record's other fields (``shape``, ``spacing``, ...)."""
    return VolumeRecord(volume_id, "synthetic", "-", split, **fields)


def new_project(
    folder: Path, volumes: Iterable[VolumeRecord] = (), *, author: str = "importer"
) -> HarvestProject:
    """Create the project ``folder`` holding ``volumes`` (added by ``author``); returns it
    open (close it, or use it as a context manager)."""
    project = HarvestProject.open(folder, create=True)
    volumes = list(volumes)
    if volumes:
        project.add_volumes(volumes, author=author)
    return project


@dataclass(frozen=True)
class RoundWriter:
    """A started round of ``project`` under its ``lock``: :meth:`write` commits a stage."""

    project: HarvestProject
    number: int
    snapshot: RoundSnapshot
    lock: RoundLock

    def write(self, stage: str, result: StageResult) -> range:
        """Commit ``stage`` with ``result``; the ids of the proposals it added."""
        return self.project.rounds.write_stage(self.number, stage, result, lock=self.lock)


@contextmanager
def writing_round(
    project: HarvestProject, *, config: Mapping | None = None, metrics: Mapping | None = None
) -> Iterator[RoundWriter]:
    """Create and start a round with ``config`` under its lock, yield its writer, and
    finish it (done, with ``metrics``) when the block ends without an error."""
    number = project.rounds.create(config).number
    with project.rounds.lock(number) as lock:
        snapshot = project.rounds.start(number, lock=lock)
        yield RoundWriter(project, number, snapshot, lock)
        project.rounds.finish(number, lock=lock, metrics=metrics)


def stopped_round(project: HarvestProject, config: Mapping) -> int:
    """A round created and started with ``config`` under its lock, then stopped before
    its first stage (failed, resumable, as a stop leaves it); returns its number."""
    number = project.rounds.next_number()
    with project.rounds.lock(number) as lock:
        project.rounds.create(config, lock=lock)
        project.rounds.start(number, lock=lock)
    project.rounds.fail(number, "stopped on request; run the round again to resume")
    return number


def write_review_round(project: HarvestProject) -> list[int]:
    """A finished round with three proposals on ``vol_a`` (roles and scores as a round
    writes them: a P_pos_H on slices 4-6, a candidate on 7-8, a P_neg_H on 2); returns
    their ids in that order."""
    proposals = [
        Proposal3D(
            [4, 5, 6], [[30, 32, 44, 46], [28, 30, 46, 48], [31, 33, 43, 45]], [0.5, 0.9, 0.6]
        ),
        Proposal3D([7, 8], [[54, 52, 70, 68], [55, 53, 69, 67]], [0.7, 0.4]),
        Proposal3D([2], [[10, 10, 20, 20]], [0.3]),
    ]
    with writing_round(project, config={"preset": "test"}, metrics={"n_harvested": 1}) as round_:
        ids = list(
            round_.write(
                "tracking", StageResult(proposals=[ProposalRow("vol_a", p) for p in proposals])
            )
        )
        round_.write(
            "harvest",
            StageResult(
                updates=[
                    ProposalUpdate(ids[0], "P_pos_H", s_c=0.9, s_gc=0.81),
                    ProposalUpdate(ids[1], "candidate", s_c=0.6, s_gc=0.42),
                    ProposalUpdate(ids[2], "P_neg_H", s_c=0.2, s_gc=0.06),
                ],
                metrics={"threshold": 0.5},
            ),
        )
    return ids
