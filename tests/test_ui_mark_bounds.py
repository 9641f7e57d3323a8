"""A RECIST axis drawn partly or entirely outside the image is refused as it is drawn,
with the store's reason in the dock (no traceback); nothing is saved."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import notification_manager

from tests.ui_helpers import drag, make_project, open_dock

pytestmark = pytest.mark.gui


def _messages() -> list[str]:
    return [str(record.message) for record in notification_manager.records]


def test_a_mark_outside_the_image_is_refused_with_a_message(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    make_project(tmp_path / "proj").close()  # 96 x 96 pixels a slice
    viewer, dock = open_dock(make_napari_viewer, qtbot, tmp_path / "proj", "vol_a")
    viewer.dims.set_current_step(0, 5)
    viewer.camera.zoom *= 0.5  # room around the image to draw beyond its edge
    tool, project = dock.volume_view.recist, dock.project
    notification_manager.records.clear()

    drag(qtbot, viewer, (84, 40), (112, 40))  # long axis ends 16 pixels right of the image
    # refused as it is drawn, in the dock, with the store's reason: no half-made mark
    refusal = dock.drawing_message.text()
    assert refusal.startswith("Long axis refused: volume 'vol_a', field long_x2 = ")
    assert "outside the image (x from -0.5 to 95.5)" in refusal
    assert any(m == refusal for m in _messages())
    assert tool.editor.pending_long is None and len(tool.guide_layer.data) == 0
    drag(qtbot, viewer, (104, 20), (124, 20))  # entirely beside the image: refused too
    assert tool.editor.pending_long is None and "field long_x1 = " in dock.drawing_message.text()
    assert project.marks("vol_a") == [] and tool.editor.marks == {}

    drag(qtbot, viewer, (60, 90), (90, 90))  # a long axis on the image near its bottom...
    drag(qtbot, viewer, (75, 84), (75, 100))  # ...and a short axis leaving it
    assert project.marks("vol_a") == [] and tool.editor.pending_long is not None
    assert dock.drawing_message.text().startswith(
        "Short axis refused: volume 'vol_a', field short_y2 = "
    )
    tool.editor.cancel_pending()

    drag(qtbot, viewer, (50, 60), (74, 60))
    drag(qtbot, viewer, (62, 54), (62, 66))
    (stored,) = project.marks("vol_a")
    drag(qtbot, viewer, (74, 60), (104, 60))  # drag an endpoint off the image: refused
    assert dock.drawing_message.text().startswith("Edit refused: volume 'vol_a', field long_x2")
    np.testing.assert_allclose(project.mark(stored.id).mark.long_axis[1], [74, 60], atol=0.5)
    np.testing.assert_allclose(tool.editor.marks[stored.id].long_axis[1], [74, 60], atol=0.5)
    dock.close_project()
