"""Ordinary failures of ``lesion-harvest round``, through the real command in a subprocess:
exit status 2, one line naming the field or file, no traceback, and the round row
failed (resumable), cancelled (a resume would fail the same way) or never created;
never a ``queued`` row left behind."""

from __future__ import annotations

import json
import shutil

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


def copied_project(blobs, tmp_path):
    """A copy of the project (its volumes stay where the project recorded them)."""
    return shutil.copytree(blobs[0], tmp_path / "project")


@pytest.mark.parametrize("value", [0, "abc", 4.5, None])
def test_a_bad_config_field_is_refused_before_any_round(blobs, tmp_path, value):
    project_dir = copied_project(blobs, tmp_path)
    config = write_config(tmp_path, "bad.json", **{"lpg.batch_size": value})
    done = lesion_harvest(*round_command(project_dir, config))
    message = assert_one_line_error(done, str(config), "'lpg.batch_size'", repr(value))
    assert message.startswith(f"{config}: config field 'lpg.batch_size' must be a whole number")
    assert rounds_of(project_dir) == []


def test_an_unreadable_config_file_names_itself(blobs, tmp_path):
    project_dir = copied_project(blobs, tmp_path)
    config = tmp_path / "broken.json"
    config.write_text('{"preset": "lite", ')
    assert_one_line_error(lesion_harvest(*round_command(project_dir, config)), str(config))
    assert rounds_of(project_dir) == []


def test_an_lpc_without_positives_cancels_the_round_with_the_reason(blobs, tmp_path):
    """One LPG step finds nothing: the LPC has no positive to learn from. The round's
    inputs are frozen, so a resume would fail the same way: the round ends cancelled
    with the reason, and the next run starts a new round."""
    project_dir = copied_project(blobs, tmp_path)
    config = write_config(tmp_path, "one_step.json", **{"lpg.train_steps": 1})
    done = lesion_harvest(*round_command(project_dir, config, "--rounds", "1"))
    message = assert_one_line_error(done, "classifier cannot be trained", "0 positives")
    (record,) = rounds_of(project_dir)
    assert record.status == "cancelled" and not record.resumable
    assert record.error == message and record.completed_stages[-1] == "verify"
    status = lesion_harvest("status", project_dir, "--json")
    assert json.loads(status.stdout)["rounds"][0]["error"] == message


def test_an_unreadable_volume_fails_the_round_resumably_naming_the_file(blobs, tmp_path):
    folder = tmp_path / "own"
    project_dir = make_blob_project(folder)  # its own image files, one of which breaks
    with HarvestProject.open(project_dir) as project:
        broken = project.volume("vol05").path
    original = open(broken, "rb").read()
    with open(broken, "wb") as handle:
        handle.write(b"not an image at all")
    done = lesion_harvest(*round_command(project_dir, folder / "tiny.json", "--rounds", "1"))
    message = assert_one_line_error(done, broken)
    (record,) = rounds_of(project_dir)
    assert record.status == "failed" and record.resumable and record.error == message
    with open(broken, "wb") as handle:  # the file repaired: the same round resumes
        handle.write(original)
    resumed = start_round(project_dir, folder / "tiny.json")
    wait_for_training(resumed)
    assert stop(resumed) == 130
    (record,) = rounds_of(project_dir)
    assert record.number == 1 and record.error.startswith("stopped on request")


def test_a_round_refused_by_a_running_one_leaves_no_row(blobs, tmp_path):
    """Two real processes: while the first runs round 1, the second is refused in one
    line and creates nothing; stopping the first leaves round 1 failed (resumable)."""
    project_dir = copied_project(blobs, tmp_path)
    config = write_config(tmp_path, "long.json", **{"lpg.train_steps": 100_000})
    first = start_round(project_dir, config)
    try:
        wait_for_training(first)
        second = lesion_harvest(*round_command(project_dir, config, "--rounds", "1"))
        assert_one_line_error(second, "another round is running", f"pid {first.pid}")
        (record,) = rounds_of(project_dir)
        assert (record.number, record.status) == (1, "running")
    finally:
        assert stop(first) == 130
    (record,) = rounds_of(project_dir)
    assert record.status == "failed" and record.resumable
    assert "stopped on request" in record.error
