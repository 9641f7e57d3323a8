"""The inputs of a project's next round, for tests of the stages that read them."""

from __future__ import annotations

from napari_lesion_harvest.store import HarvestProject


def next_round_snapshot(project_dir):
    """The inputs a next round of the project would get (a round started and cancelled)."""
    with HarvestProject.open(project_dir) as project:
        number = project.rounds.create({}).number
        with project.rounds.lock(number) as lock:
            snapshot = project.rounds.start(number, lock=lock)
            project.rounds.cancel(number, author="test")
    return snapshot
