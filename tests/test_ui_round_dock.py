"""Running a round from the dock, in a real viewer: the expected duration before Run, the
refusals said in the dock before any round process starts, and the question after a
stopped round when another configuration is chosen (resume it, or discard it)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from napari_lesion_harvest.geometry import RecistMark
from napari_lesion_harvest.harvest.blob_project import TINY_CONFIG, make_blob_project
from napari_lesion_harvest.harvest.config import load_config
from napari_lesion_harvest.store.project import HarvestProject
from napari_lesion_harvest.ui.round_outcome import harvest_outcome
from napari_lesion_harvest.ui.round_panel import PROBLEM_COLOUR
from tests.builders import stopped_round
from tests.previous_version import as_previous_version
from tests.ui_helpers import answer_next_dialog, make_project, open_dock

pytestmark = pytest.mark.gui

TINY_STEPS = TINY_CONFIG["lpg.train_steps"]
MARK = RecistMark.from_measurement_coordinates([30, 40, 44, 40, 37, 34, 37, 46], z=5)


def _dock(make_napari_viewer, qtbot, folder):
    viewer, dock = open_dock(make_napari_viewer, qtbot, folder, docked=True)
    dock.tabs.setCurrentWidget(dock.round_panel)
    return viewer, dock, dock.round_panel


def test_refusals_are_said_in_the_dock_before_a_round_process_starts(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    make_project(tmp_path / "proj").close()  # two V_H volumes, nothing marked complete
    _viewer, dock, panel = _dock(make_napari_viewer, qtbot, tmp_path / "proj")
    panel.device_box.setCurrentText("cpu")
    estimate = panel.estimate_label.text()
    assert estimate.startswith("Round 1: about ")
    assert estimate.endswith(" on cpu (an estimate until a round has run here).")
    assert "train_lpg: " in panel.estimate_label.toolTip()

    panel.run_button.click()
    status = panel.status_label.text()
    assert status.startswith("The round cannot start: no fully annotated volumes (V_M): ")
    assert PROBLEM_COLOUR in panel.status_label.styleSheet()
    dock.project.set_volume_complete("vol_b", author="radiologist")
    panel.run_button.click()
    assert panel.status_label.text() == (
        "The round cannot start: the 1 fully annotated volume(s) (V_M) have no marks; "
        "a round learns what a lesion is from them"
    )
    panel.set_config(str(tmp_path / "missing.json"))
    assert panel.estimate_label.text().startswith("Configuration not usable: config ")
    panel.run_button.click()
    assert "missing.json" in panel.status_label.text()
    assert panel.status_label.text().startswith("The round cannot start: config ")

    dock.project.add_mark("vol_b", MARK, author="radiologist")
    panel.set_config("lite")
    if not torch.cuda.is_available():  # asked in a `round --check` subprocess
        panel.device_box.setCurrentText("cuda")
        panel.run_button.click()
        assert panel.status_label.text() == "Checking the device (cuda) before the round starts..."
        assert not panel.run_button.isEnabled()
        qtbot.waitUntil(lambda: "cannot start" in panel.status_label.text(), timeout=180_000)
        assert panel.status_label.text() == (
            "The round cannot start: --device cuda was asked for, but torch sees no usable "
            "CUDA GPU on this machine; use --device cpu or auto"
        )
        assert panel.run_button.isEnabled()
    assert not panel.runner.running and panel.runner.log_path is None
    assert dock.project.rounds.list() == []  # no round was created
    assert not (tmp_path / "proj" / "logs").exists()
    dock.close_project()


def _round_command_line(log_path) -> str:
    return Path(log_path).read_text(encoding="utf-8").splitlines()[0]


@pytest.mark.slow
def test_after_a_stop_another_configuration_asks_resume_or_discard(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    project_dir = make_blob_project(tmp_path)  # writes tiny.json; its rounds find lesions
    with HarvestProject.open(project_dir) as project:
        stopped_round(project, asdict(load_config("paper")))
    tiny = tmp_path / "tiny.json"
    _viewer, dock, panel = _dock(make_napari_viewer, qtbot, project_dir)
    panel.device_box.setCurrentText("cpu")
    panel.set_config(str(tiny))
    assert panel.estimate_label.text().startswith("Round 1 (resumes after its start): about ")

    asked = answer_next_dialog("Cancel")
    assert not panel.start_round()
    assert asked[0] == "Round 1 stopped after its start, with another configuration than " + (
        f"{str(tiny)!r}."
    )
    assert "Differences: lpc.epochs 30 -> 3, lpc.folds 5 -> 2, " in asked[1]
    assert panel.status_label.text() == "Not started: neither resumed nor discarded."
    assert not panel.runner.running

    answer_next_dialog("Discard it, start with tiny.json")
    assert panel.start_round()
    assert _round_command_line(panel.runner.log_path).endswith("--discard --author radiologist")
    qtbot.waitUntil(lambda: panel.clock.stage == "train_lpg", timeout=180_000)
    assert panel.stop_and_wait(60)
    old, new = dock.project.rounds.list()
    assert (old.status, old.error) == ("cancelled", "cancelled by radiologist")
    assert new.status == "failed" and new.config["lpg"]["train_steps"] == TINY_STEPS

    panel.set_config("lite")  # round 2 stopped with tiny.json; lite differs
    answer_next_dialog("Resume round 2")
    assert panel.start_round()
    assert "--discard" not in _round_command_line(panel.runner.log_path)
    # the round's end is said once the panel has handled the process's exit
    qtbot.waitUntil(
        lambda: not panel.runner.running and panel.status_label.text().startswith("Round 2 "),
        timeout=300_000,
    )
    (record,) = [r for r in dock.project.rounds.list() if r.number == 2]
    assert record.status == "done" and record.config["lpg"]["train_steps"] == TINY_STEPS
    # the outcome is said in the dock; a round that harvested nothing says why
    text, nothing = harvest_outcome(record)
    assert panel.status_label.text() == text and text.startswith("Round 2 ")
    assert (PROBLEM_COLOUR in panel.status_label.styleSheet()) is nothing
    dock.close_project()


def test_a_stopped_round_of_the_previous_version_is_planned_or_refused_in_the_dock(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    project_dir = make_blob_project(tmp_path)
    stored = as_previous_version(load_config("lite"))
    with HarvestProject.open(project_dir) as project:
        number = stopped_round(project, stored)
    _viewer, dock, panel = _dock(make_napari_viewer, qtbot, project_dir)
    panel.device_box.setCurrentText("cpu")
    panel.set_config("lite")
    assert panel.estimate_label.text().startswith("Round 1 (resumes after its start): about ")
    asked = answer_next_dialog("Cancel", timeout_ms=2_000)  # answered if it were asked
    assert panel._checked_plan(dock.project) is False and asked == []  # resumed, unasked
    dock.close_project()

    with HarvestProject.open(project_dir) as project:
        project.rounds.cancel(number, author="radiologist")
        stopped_round(project, {**stored, "lpc_hu_window": [-200, 300]})
    dock.open_project(project_dir)
    refusal = (
        "round 2 was run with lpc_hu_window=[-200, 300], which this version no longer has; "
        "discard it with `lesion-harvest round --discard`"
    )
    panel.set_config("lite")
    assert panel.estimate_label.text() == f"Configuration not usable: {refusal}"
    panel.run_button.click()
    assert panel.status_label.text() == f"The round cannot start: {refusal}"
    assert not panel.runner.running and panel.runner.log_path is None
    dock.close_project()
