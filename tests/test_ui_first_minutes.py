"""A new user's first minutes with the dock, in a real viewer: a new project in a folder
that does not exist yet, a demo project built from the sample's phantoms, holding volumes
out from the worklist, and volume ids shown whole."""

from __future__ import annotations

import json

import pytest
from qtpy.QtCore import QItemSelectionModel, Qt

from napari_lesion_harvest.store import HarvestProject
from napari_lesion_harvest.ui.dock import HarvestDock
from napari_lesion_harvest.ui.worklist import ID_COLUMN_MARGIN_PX
from tests.ui_helpers import answer_next_file_dialog, drag, make_project

pytestmark = pytest.mark.gui

LONG_IDS = ("000001_01_01_103-115", "004321_02_03_001-060", "vol_c")


def _dock(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    dock = HarvestDock(viewer, author="radiologist")
    viewer.window.add_dock_widget(dock, name="Lesion Harvest", area="right")
    return viewer, dock


def test_new_project_creates_the_folder_typed(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    _viewer, dock = _dock(make_napari_viewer)
    assert dock.project_panel.path_label.text().startswith("No project open. To try the dock")
    folder = tmp_path / "studies" / "liver project"  # neither folder exists
    asked = answer_next_file_dialog(folder)
    qtbot.mouseClick(dock.project_panel.create_button, Qt.MouseButton.LeftButton)
    assert asked == ["New harvest project folder"]
    assert dock.project is not None and dock.project.folder == folder
    assert (folder / "project.sqlite").is_file()
    assert dock.project_panel.path_label.text().startswith("<b>liver project</b>")
    dock.close_project()
    with HarvestProject.open(folder) as project:
        assert project.volumes() == []
    assert dock.project_panel.path_label.text().startswith("No project open.")


def test_hold_out_from_the_worklist_and_ids_shown_whole(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    project = make_project(tmp_path / "proj", volume_ids=LONG_IDS)
    project.set_volume_complete("vol_c", author="radiologist")
    project.close()
    _viewer, dock = _dock(make_napari_viewer)
    dock.open_project(tmp_path / "proj")
    worklist = dock.worklist
    table = worklist.table
    widest = max(table.fontMetrics().horizontalAdvance(v) for v in LONG_IDS)
    assert table.columnWidth(0) >= widest + ID_COLUMN_MARGIN_PX  # never elided
    index = worklist.proxy.index(0, 0)
    assert worklist.proxy.data(index, Qt.ItemDataRole.ToolTipRole) == LONG_IDS[0]
    split_index = worklist.proxy.index(0, 1)
    assert worklist.proxy.data(split_index) == "to harvest"
    assert worklist.proxy.data(split_index, Qt.ItemDataRole.ToolTipRole).startswith("V_H: ")

    def select(*rows):
        table.clearSelection()
        for row in rows:
            table.selectionModel().select(
                worklist.proxy.index(row, 0),
                QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows,
            )

    actions = {a.text(): a for a in worklist.hold_out_button.menu().actions()}
    select(0, 1)
    assert worklist.selected_volume_ids() == list(LONG_IDS[:2])
    actions["Hold out as harvest test (V_H_test)"].trigger()
    assert [dock.project.volume(v).split for v in LONG_IDS[:2]] == ["V_H_test"] * 2
    assert dock.project_message.text() == "2 volume(s) now held out: harvest test (V_H_test)."
    assert worklist.proxy.data(worklist.proxy.index(0, 1)) == "held out: harvest test"

    select(1, 2)  # vol_c is fully marked (V_M): it trains the rounds
    actions["Hold out as detector test (V_D_test)"].trigger()
    assert dock.project_message.text().startswith("Nothing moved: vol_c is fully marked (V_M)")
    assert dock.project.volume(LONG_IDS[1]).split == "V_H_test"  # all or nothing
    select(1)
    actions["Put back to harvest (V_H)"].trigger()
    assert dock.project.volume(LONG_IDS[1]).split == "V_H"
    dock.worklist.split_box.setCurrentText("held out: harvest test")
    assert worklist.visible_volume_ids() == [LONG_IDS[0]]
    dock.close_project()


@pytest.mark.slow
def test_a_demo_project_from_the_sample_is_ready_to_draw_and_run(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    viewer, dock = _dock(make_napari_viewer)
    viewer.open_sample("napari-lesion-harvest", "synthetic_ct")  # File > Open Sample
    assert dock.project_message.text().startswith("'synthetic CT ")
    assert "is not in a harvest project" in dock.project_message.text()
    assert "Start a demo project" in dock.project_message.text()

    answer_next_file_dialog(tmp_path / "demo")
    with qtbot.waitSignal(dock.demo_ready, timeout=300_000):
        qtbot.mouseClick(dock.project_panel.demo_button, Qt.MouseButton.LeftButton)
    assert dock.project.folder == tmp_path / "demo" / "project"
    splits = [s.split for s in dock.project.volume_summaries()]
    assert (splits.count("V_M"), splits.count("V_H"), splits.count("V_H_test")) == (3, 6, 3)
    assert dock.project_message.text().startswith(
        "Demo project ready: 3 fully marked volumes (V_M), 6 to harvest (V_H), 3 held out"
    )
    config = dock.round_panel.config_box.currentText()
    assert config == str(tmp_path / "demo" / "demo_round.json")
    written = json.loads((tmp_path / "demo" / "demo_round.json").read_text())
    assert written["lpg"]["architecture"] == "lite"
    assert dock.round_panel.estimate_label.text().startswith("Round 1: about ")

    volume_id = next(s.volume_id for s in dock.project.volume_summaries() if s.split == "V_H")
    with qtbot.waitSignal(dock.volume_opened, timeout=60_000):
        dock.open_volume(volume_id)
    image = dock.volume_view.image_layer
    viewer.dims.set_point(0, image.data_to_world([10, 0, 0])[0])
    drag(qtbot, viewer, (50, 60), (70, 60), image=image)
    drag(qtbot, viewer, (60, 54), (60, 66), image=image)
    assert [m.mark.z for m in dock.project.marks(volume_id) if m.origin == "expert"] == [10]
    dock.close_project()
