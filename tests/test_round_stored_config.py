"""A project whose rounds the previous version stored, with the round options this version
removed: it opens, shows its rounds, and resumes a stopped round when the options hold
the value both presets gave them; any other value is refused in one line that names the
round and the field, and ``round --discard`` (the advice) gets past it."""

from __future__ import annotations

import json

from napari_lesion_harvest.harvest.blob_project import TINY_CONFIG, make_blob_project
from napari_lesion_harvest.harvest.config import load_config
from napari_lesion_harvest.harvest.round import run_rounds
from napari_lesion_harvest.store import HarvestProject
from tests.builders import stopped_round
from tests.previous_version import as_previous_version
from tests.round_command import (
    assert_one_line_error,
    lesion_harvest,
    round_command,
    rounds_of,
    start_round,
    stop,
    wait_for_training,
    write_config,
)


def _stopped_old_round(folder, **changes) -> tuple:
    """A blob project whose round 1 the previous version started with ``tiny.json``
    and stopped before its first stage: its stored configuration holds every field
    of that version (the removed ones at their old values, ``changes`` over them).
    Returns the project folder and the stored configuration."""
    project_dir = make_blob_project(folder)
    tiny = load_config(str(folder / "tiny.json"))
    stored = {**as_previous_version(tiny), **changes}
    with HarvestProject.open(project_dir) as project:
        stopped_round(project, stored)
    return project_dir, stored


def test_a_round_stored_with_the_removed_fields_at_their_old_values_resumes(tmp_path):
    project_dir, stored = _stopped_old_round(tmp_path)
    status = lesion_harvest("status", project_dir, "--json")
    assert status.returncode == 0, status.stderr
    (shown,) = json.loads(status.stdout)["rounds"]
    assert (shown["number"], shown["status"]) == (1, "failed")
    check = lesion_harvest(*round_command(project_dir, "lite", "--check"))
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == (
        "ready on cpu: round 1 would resume after no stage (its own configuration)"
    )

    with HarvestProject.open(project_dir) as project:
        (record,) = run_rounds(project, load_config("lite"), rounds=1, device="cpu")
    assert (record.number, record.status) == (1, "done")
    # its own configuration (tiny.json's 80 LPG steps), not lite's 600
    assert record.metrics["lpg"]["steps"] == TINY_CONFIG["lpg.train_steps"]
    assert rounds_of(project_dir)[0].config == stored  # kept as the round stored it


def test_a_round_stored_with_a_removed_option_on_is_refused_until_discarded(tmp_path):
    project_dir, stored = _stopped_old_round(tmp_path, lpg_crossing_positives=True)
    tiny = tmp_path / "tiny.json"
    for more in ((), ("--check",)):
        refused = lesion_harvest(*round_command(project_dir, tiny, *more))
        assert assert_one_line_error(refused) == (
            "round 1 was run with lpg_crossing_positives=true, which this version no longer "
            "has; discard it with `lesion-harvest round --discard`"
        )
    (record,) = rounds_of(project_dir)
    assert (record.status, record.config) == ("failed", stored)  # untouched

    long = write_config(tmp_path, "long.json", **{"lpg.train_steps": 100_000})
    discarding = start_round(project_dir, long, "--discard", "--author", "rad")
    wait_for_training(discarding)
    assert stop(discarding) == 130
    old, new = rounds_of(project_dir)
    assert (old.status, old.error) == ("cancelled", "cancelled by rad")
    assert new.number == 2 and new.config["lpg"]["train_steps"] == 100_000
