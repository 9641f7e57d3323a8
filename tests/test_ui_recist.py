"""RECIST drawing with real mouse drags on napari's canvas, saved to the store at once."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ui_helpers import click, drag, make_project, open_dock

pytestmark = pytest.mark.gui

#: Canvas positions are whole screen pixels; at the default zoom one is well under a data pixel.
PIXEL_TOLERANCE = 0.5


def test_drawn_mark_is_saved_at_once_and_restored_after_reopen(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    make_project(tmp_path / "proj").close()
    viewer, dock = open_dock(make_napari_viewer, qtbot, tmp_path / "proj", "vol_a")
    viewer.dims.set_current_step(0, 5)
    tool = dock.volume_view.recist
    assert viewer.layers.selection.active is tool.marks_layer

    drag(qtbot, viewer, (26, 40), (46, 40))  # long axis
    assert tool.editor.pending_long is not None and dock.project.marks("vol_a") == []
    assert len(tool.guide_layer.data) == 2  # long axis + perpendicular guide
    drag(qtbot, viewer, (36, 34), (36, 46))  # short axis, perpendicular
    stored = dock.project.marks("vol_a")
    assert len(stored) == 1 and stored[0].origin == "expert" and stored[0].author == "radiologist"
    mark = stored[0].mark
    assert mark.z == 5
    np.testing.assert_allclose(mark.long_axis, [[26, 40], [46, 40]], atol=PIXEL_TOLERANCE)
    np.testing.assert_allclose(mark.short_axis, [[36, 34], [36, 46]], atol=PIXEL_TOLERANCE)
    # drawn: long axis, short axis, derived box, with the lengths in mm (0.8 mm pixels)
    assert len(tool.marks_layer.data) == 3
    long_mm, short_mm = (0.8 * d for d in mark.diameters_px())
    assert tool.marks_layer.features["label"][2] == f"{long_mm:.1f} x {short_mm:.1f} mm"
    assert abs(long_mm - 16.0) < 0.5 and abs(short_mm - 9.6) < 0.5
    assert len(tool.guide_layer.data) == 0

    dock.close()  # napari closes the dock with the window
    assert dock.project is None
    viewer2, dock2 = open_dock(make_napari_viewer, qtbot, tmp_path / "proj", "vol_a")
    tool2 = dock2.volume_view.recist
    assert list(tool2.editor.marks) == [stored[0].id]
    np.testing.assert_allclose(tool2.editor.marks[stored[0].id].long_axis, mark.long_axis)
    assert len(tool2.marks_layer.data) == 3
    layer_z = {int(round(z)) for shape in tool2.marks_layer.data for z in shape[:, 0]}
    assert layer_z == {5}  # drawn on its own slice only
    dock2.close_project()


def test_refusals_edit_delete_and_undo_follow_the_store(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    make_project(tmp_path / "proj").close()
    viewer, dock = open_dock(make_napari_viewer, qtbot, tmp_path / "proj", "vol_a")
    viewer.dims.set_current_step(0, 8)
    tool = dock.volume_view.recist
    project = dock.project

    drag(qtbot, viewer, (50, 60), (74, 60))
    drag(qtbot, viewer, (52, 52), (70, 66))  # about 38 degrees: refused, long axis kept
    assert project.marks("vol_a") == [] and tool.editor.pending_long is not None
    drag(qtbot, viewer, (62, 46), (62, 76))  # longer than the long axis: refused
    assert project.marks("vol_a") == []
    drag(qtbot, viewer, (62, 54), (62, 66))
    (stored,) = project.marks("vol_a")

    click(qtbot, viewer, (68, 60))  # on the long axis: selects the mark
    assert tool.editor.selected == stored.id
    drag(qtbot, viewer, (74, 60), (78, 60))  # drag an endpoint: edit
    edited = project.mark(stored.id).mark
    np.testing.assert_allclose(edited.long_axis[1], [78, 60], atol=PIXEL_TOLERANCE)
    np.testing.assert_allclose(edited.long_axis[0], [50, 60], atol=PIXEL_TOLERANCE)

    tool.editor.delete_selected()
    assert project.marks("vol_a") == [] and project.mark(stored.id).deleted
    tool.editor.undo()  # undo the delete
    assert [m.id for m in project.marks("vol_a")] == [stored.id]
    tool.editor.undo()  # undo the edit
    np.testing.assert_allclose(
        project.mark(stored.id).mark.long_axis[1], [74, 60], atol=PIXEL_TOLERANCE
    )
    tool.editor.undo()  # undo the add
    assert project.marks("vol_a") == []
    assert tool.editor.marks == {} and len(tool.marks_layer.data) == 0
    dock.close_project()


def test_small_lesions_on_coarse_images_are_drawn_and_boxed_as_training_boxes_them(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """3.7 mm pixels: a 6 mm lesion is under 2 image pixels. Drags are measured on screen,
    so zoomed in it can be marked; the box drawn is the one training uses."""
    from napari_lesion_harvest.ui.recist_tool import MIN_AXIS_SCREEN_PX

    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    make_project(tmp_path / "proj", spacing=(5.0, 3.7, 3.7)).close()
    viewer, dock = open_dock(make_napari_viewer, qtbot, tmp_path / "proj", "vol_a")
    viewer.dims.set_current_step(0, 5)
    image = dock.volume_view.image_layer
    tool = dock.volume_view.recist
    viewer.scene.camera.zoom = 16 / 3.7  # one image pixel is 16 screen pixels
    viewer.scene.camera.center = tuple(image.data_to_world([5, 40, 36])[1:])
    qtbot.wait(300)  # the screen widths settle after the zoom

    drag(qtbot, viewer, (36.0, 40.0), (36.15, 40.0))  # 2.4 screen pixels: a click
    assert tool.editor.pending_long is None
    assert 0.15 * 16 < MIN_AXIS_SCREEN_PX
    drag(qtbot, viewer, (35.2, 40.0), (36.8, 40.0))  # 1.6 image pixels, 5.9 mm
    assert tool.editor.pending_long is not None
    drag(qtbot, viewer, (36.0, 39.4), (36.0, 40.6))  # 1.2 image pixels, 4.4 mm
    (stored,) = dock.project.marks("vol_a")
    long_mm, short_mm = stored.mark.diameters_mm((3.7, 3.7))
    assert long_mm == pytest.approx(5.9, abs=0.5) and short_mm == pytest.approx(4.4, abs=0.5)
    # the dim rectangle is RecistMark.box(): the axes' extent plus 5 pixels, as training uses
    rectangle = tool.marks_layer.data[2]
    drawn = [*rectangle[:, 2:0:-1].min(axis=0), *rectangle[:, 2:0:-1].max(axis=0)]
    np.testing.assert_allclose(drawn, stored.mark.box())
    np.testing.assert_allclose(
        stored.mark.box(), [35.2 - 5, 39.4 - 5, 36.8 + 5, 40.6 + 5], atol=PIXEL_TOLERANCE / 4
    )
    dock.close_project()
