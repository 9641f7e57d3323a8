"""``lesion-harvest round --check`` and ``--discard`` through the real command.

A stopped round is resumed by the next ``round`` with its own configuration;
``--discard`` cancels it instead and starts a new round with ``--config``.
``--check`` runs the engine's refusals and says what a round would do, without
running one.
"""

from __future__ import annotations

import json

import pytest

from napari_lesion_harvest.harvest.blob_project import make_blob_project
from napari_lesion_harvest.store import HarvestProject
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


def _stopped_round(tmp_path):
    """A blob project whose round 1 (``first.json``: 100,000 LPG steps) was stopped."""
    project_dir = make_blob_project(tmp_path)
    first = write_config(tmp_path, "first.json", **{"lpg.train_steps": 100_000})
    process = start_round(project_dir, first)
    wait_for_training(process)
    assert stop(process) == 130
    return project_dir


@pytest.mark.slow
def test_check_says_what_a_round_would_do_and_discard_starts_the_new_configuration(tmp_path):
    project_dir = _stopped_round(tmp_path)
    (record,) = rounds_of(project_dir)
    assert record.status == "failed" and record.config["lpg"]["train_steps"] == 100_000
    second = write_config(tmp_path, "second.json", **{"lpg.train_steps": 90_000})

    check = lesion_harvest(*round_command(project_dir, second, "--check", "--progress-json"))
    assert check.returncode == 0, check.stderr
    (event,) = [json.loads(line) for line in check.stdout.splitlines()]
    assert event["stage"] == "check" and event["metrics"] == {"device": "cpu", "resume": 1}
    assert (
        event["message"]
        == "ready on cpu: round 1 would resume after no stage (its own configuration)"
    )
    assert [r.status for r in rounds_of(project_dir)] == ["failed"]  # nothing ran

    discarding = start_round(project_dir, second, "--discard", "--author", "rad")
    first_line = json.loads(discarding.stdout.readline())
    assert first_line["stage"] == "discard" and first_line["metrics"] == {"round": 1}
    wait_for_training(discarding)
    assert stop(discarding) == 130
    old, new = rounds_of(project_dir)
    assert (old.status, old.error) == ("cancelled", "cancelled by rad")
    assert new.number == 2 and new.config["lpg"]["train_steps"] == 90_000
    assert new.status == "failed"  # stopped: resumable with its own configuration
    with HarvestProject.open(project_dir) as project:
        (entry,) = [a for a in project.audit_log() if a.action == "round.cancelled"]
        assert entry.author == "rad" and entry.target_id == 1

    check = lesion_harvest(*round_command(project_dir, second, "--check"))
    assert check.stdout.strip() == (
        "ready on cpu: round 2 would resume after no stage (its own configuration)"
    )


def test_a_refused_round_discards_nothing(tmp_path):
    project_dir = _stopped_round(tmp_path)
    with HarvestProject.open(project_dir) as project:  # no volume left to harvest
        for record in project.volumes():
            if record.split in ("V_H", "V_H_test"):
                project.set_split(record.volume_id, "V_D_test", author="rad")
    config = write_config(tmp_path, "second.json")
    for flag in ("--discard", "--check"):
        refused = lesion_harvest(*round_command(project_dir, config, flag))
        assert_one_line_error(refused, "no volumes to harvest (V_H)")
    assert [r.status for r in rounds_of(project_dir)] == ["failed"]


def test_discard_and_check_refuse_while_a_round_runs(tmp_path):
    project_dir = make_blob_project(tmp_path)
    config = write_config(tmp_path, "long.json", **{"lpg.train_steps": 100_000})
    running = start_round(project_dir, config)
    try:
        wait_for_training(running)
        for flag in ("--discard", "--check"):
            refused = lesion_harvest(*round_command(project_dir, config, flag))
            assert_one_line_error(refused, f"pid {running.pid}", "is running; stop it first")
        (record,) = rounds_of(project_dir)
        assert record.status == "running"
    finally:
        assert stop(running) == 130
