"""'Mark volume complete' on a held-out volume in the dock: flagged (the evaluation's
truth), never moved into training."""

from __future__ import annotations

import pytest

from napari_lesion_harvest.ui.dock import HarvestDock
from tests.ui_helpers import make_project

pytestmark = pytest.mark.gui


def test_complete_button_flags_a_held_out_volume_in_place(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    project = make_project(tmp_path / "proj", volume_ids=("vol_a", "vol_t"))
    project.set_split("vol_t", "V_H_test", author="radiologist")
    project.close()
    notes = []
    monkeypatch.setattr("napari.utils.notifications.show_info", notes.append)
    dock = HarvestDock(make_napari_viewer(), author="radiologist")
    qtbot.addWidget(dock)
    dock.open_project(tmp_path / "proj")
    with qtbot.waitSignal(dock.volume_opened, timeout=20_000):
        dock.worklist.volume_requested.emit("vol_t")

    dock.complete_button.setChecked(True)
    record = dock.project.volume("vol_t")
    assert (record.split, record.complete) == ("V_H_test", True)
    assert notes == ["vol_t stays in V_H_test; its marks are now the evaluation's truth"]
    dock.complete_button.setChecked(False)
    record = dock.project.volume("vol_t")
    assert (record.split, record.complete) == ("V_H_test", False)
    dock.close_project()
