"""A real round (the tiny blob project, CPU) seen in the dock: its stage, progress bar and
time left, this machine's measured rate kept for the next estimate; and closing napari
during the round: asked first, then the round is stopped and waited for."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from napari_lesion_harvest.harvest.blob_project import TINY_CONFIG, make_blob_project
from napari_lesion_harvest.store import HarvestProject
from napari_lesion_harvest.ui.dock import HarvestDock
from tests.ui_helpers import answer_next_dialog

pytestmark = [pytest.mark.gui, pytest.mark.slow]

ROUND_TIMEOUT_MS = 300_000


def test_progress_time_left_in_the_dock_and_closing_napari_stops_the_round(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    project_dir = make_blob_project(tmp_path)
    viewer = make_napari_viewer(show=True)
    dock = HarvestDock(viewer, author="radiologist")
    viewer.window.add_dock_widget(dock, name="Lesion Harvest", area="right")
    dock.open_project(project_dir)
    panel = dock.round_panel
    dock.tabs.setCurrentWidget(panel)
    panel.set_config(str(tmp_path / "tiny.json"))
    panel.device_box.setCurrentText("cpu")
    assert "(an estimate until a round has run here)" in panel.estimate_label.text()

    assert panel.start_round()
    qtbot.waitUntil(lambda: panel.clock.stage == "train_lpg", timeout=ROUND_TIMEOUT_MS)
    qtbot.waitUntil(
        lambda: panel.progress.stage_bar.maximum() == TINY_CONFIG["lpg.train_steps"],
        timeout=ROUND_TIMEOUT_MS,
    )
    assert panel.progress.stage_label.text() == "Stage 1 of 6: train_lpg"
    assert panel.progress.stage_bar.isVisible() and panel.stop_button.isEnabled()
    assert panel.progress.eta_label.text().startswith("About ")
    assert " left (done at about " in panel.progress.eta_label.text()
    # the scan starts: the training's seconds per unit are kept for this machine
    qtbot.waitUntil(lambda: panel.clock.stage == "scan", timeout=ROUND_TIMEOUT_MS)
    assert panel.progress.stage_label.text() == "Stage 2 of 6: scan"
    rates = json.loads((tmp_path / "config" / "round_rates.json").read_text())
    assert list(rates) == [f"{socket.gethostname()}|cpu|train_lpg|lite"]
    assert len(rates[f"{socket.gethostname()}|cpu|train_lpg|lite"]) == 1

    window = viewer.window._qt_window
    asked = answer_next_dialog("Cancel")
    assert not window.close()  # the window's close, as its close button does
    assert asked[0].startswith("A harvest round is running")
    assert window.isVisible() and panel.runner.running

    log_path = Path(panel.runner.log_path)
    answer_next_dialog("Stop the round and close")
    assert window.close()
    del viewer.window._qt_window  # closed as its close button does: napari may not close it again
    assert not panel.runner.running  # stopped and waited for before napari closed
    log = log_path.read_text(encoding="utf-8")
    assert "BrokenPipeError" not in log and "Traceback" not in log
    assert log.rstrip().splitlines()[-1].startswith("# exit status 130")
    with HarvestProject.open(project_dir) as project:
        (record,) = project.rounds.list()
        assert record.status == "failed" and record.error.startswith("stopped on request")
        assert "train_lpg" in record.completed_stages
        assert project.rounds.lock_holder() is None
