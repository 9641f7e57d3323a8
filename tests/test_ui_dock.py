"""The plugin in a real napari viewer: Plugins menu entry, dock, project, worklist."""

from __future__ import annotations

import pytest
from qtpy.QtCore import Qt

from napari_lesion_harvest.ui.dock import HarvestDock
from tests.ui_helpers import make_project

pytestmark = pytest.mark.gui


def test_plugins_menu_lists_lesion_harvest_and_opens_the_dock(make_napari_viewer):
    viewer = make_napari_viewer()
    # the real Qt menu of the window, built from the installed plugin's manifest
    actions = {action.text(): action for action in viewer.window.plugins_menu.actions()}
    assert "Lesion Harvest (Lesion Harvest)" in actions
    actions["Lesion Harvest (Lesion Harvest)"].trigger()
    docks = viewer.window._wrapped_dock_widgets
    assert "Lesion Harvest (Lesion Harvest)" in docks
    assert isinstance(docks["Lesion Harvest (Lesion Harvest)"].widget(), HarvestDock)


def test_project_worklist_filter_and_open_volume(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    make_project(tmp_path / "proj", volume_ids=("vol_a", "vol_b", "lung_c")).close()
    viewer = make_napari_viewer()
    dock = HarvestDock(viewer, author="radiologist")
    qtbot.addWidget(dock)
    assert dock.open_project(tmp_path / "proj") is not None
    assert dock.worklist.visible_volume_ids() == ["vol_a", "vol_b", "lung_c"]
    dock.worklist.table.sortByColumn(0, Qt.SortOrder.DescendingOrder)
    assert dock.worklist.visible_volume_ids() == ["vol_b", "vol_a", "lung_c"]
    dock.worklist.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    assert dock.worklist.visible_volume_ids() == ["lung_c", "vol_a", "vol_b"]
    dock.worklist.search.setText("vol")
    assert dock.worklist.visible_volume_ids() == ["vol_a", "vol_b"]
    dock.worklist.split_box.setCurrentText("fully marked")  # V_M
    assert dock.worklist.visible_volume_ids() == []
    dock.worklist.split_box.setCurrentText("all splits")
    dock.worklist.search.setText("")
    assert dock.project_panel.recent_box.itemText(0) == str((tmp_path / "proj").resolve())

    with qtbot.waitSignal(dock.volume_opened, timeout=20_000):
        dock.worklist.volume_requested.emit("vol_b")
    image = viewer.layers["vol_b"]
    assert image.data.shape == (12, 96, 96)
    assert tuple(image.scale) == pytest.approx((2.5, 0.8, 0.8))
    assert tuple(image.contrast_limits) == (-160.0, 240.0)  # soft tissue by default
    dock.set_window("lung")
    assert tuple(image.contrast_limits) == (-1350.0, 150.0)
    dock.set_window("DICOM")
    assert tuple(image.contrast_limits) == (-175.0, 275.0)

    dock.complete_button.setChecked(True)
    assert dock.project.volume("vol_b").split == "V_M"
    summary = {s.volume_id: s for s in dock.project.volume_summaries()}
    assert summary["vol_b"].complete
    dock.close_project()
