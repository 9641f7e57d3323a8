"""Rounds of a project run in the test's process: the inputs of its next round, and a
round stopped at a chosen moment of its progress."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from napari_lesion_harvest.harvest.round import run_rounds
from napari_lesion_harvest.progress import Cancelled
from napari_lesion_harvest.store import HarvestProject, RoundSnapshot


def next_round_snapshot(project_dir) -> RoundSnapshot:
    """The inputs a next round of the project would get (a round started and cancelled)."""
    with HarvestProject.open(project_dir) as project:
        number = project.rounds.create({}).number
        with project.rounds.lock(number) as lock:
            snapshot = project.rounds.start(number, lock=lock)
            project.rounds.cancel(number, author="test")
    return snapshot


def round_stopped_when(
    project: HarvestProject, config, predicate: Callable[[list[tuple]], bool]
) -> list[tuple]:
    """Run round 1 of ``project`` with ``config`` (a ``RoundConfig``) on the CPU until
    ``predicate(events)`` holds, which stops it (a stop is asserted); returns the
    round's progress events, the arguments of each progress call
    (``stage, step, total[, message[, metrics]]``)."""
    events = []
    with pytest.raises(Cancelled):
        run_rounds(
            project,
            config,
            rounds=1,
            device="cpu",
            progress=lambda *event: events.append(event),
            cancelled=lambda: predicate(events),
        )
    return events
