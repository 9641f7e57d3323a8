"""A RECIST mark drawn partly outside the image: the store refuses it and the dock shows a
message (no traceback); nothing is saved."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import notification_manager

from napari_lesion_harvest.ui.dock import HarvestDock
from tests.ui_helpers import drag, make_project

pytestmark = pytest.mark.gui


def _messages() -> list[str]:
    return [str(record.message) for record in notification_manager.records]


def test_a_mark_outside_the_image_is_refused_with_a_message(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    make_project(tmp_path / "proj").close()  # 96 x 96 pixels a slice
    viewer = make_napari_viewer(show=True)
    dock = HarvestDock(viewer, author="radiologist")
    qtbot.addWidget(dock)
    dock.open_project(tmp_path / "proj")
    with qtbot.waitSignal(dock.volume_opened, timeout=20_000):
        dock.open_volume("vol_a")
    viewer.dims.set_current_step(0, 5)
    viewer.camera.zoom *= 0.5  # room around the image to draw beyond its edge
    tool, project = dock.volume_view.recist, dock.project
    notification_manager.records.clear()

    drag(qtbot, viewer, (84, 40), (112, 40))  # long axis ends 16 pixels right of the image
    drag(qtbot, viewer, (98, 32), (98, 48))
    assert project.marks("vol_a") == [] and tool.marks == {}
    refusal = [m for m in _messages() if m.startswith("Mark not saved: ")]
    assert len(refusal) == 1 and "volume 'vol_a', field long_x2 = " in refusal[0]
    assert "outside the image (x from -0.5 to 95.5)" in refusal[0]
    assert tool.pending_long is not None  # Esc drops it, or the short axis is drawn again
    tool.cancel_pending()

    drag(qtbot, viewer, (50, 60), (74, 60))
    drag(qtbot, viewer, (62, 54), (62, 66))
    (stored,) = project.marks("vol_a")
    drag(qtbot, viewer, (74, 60), (104, 60))  # drag an endpoint off the image: refused
    assert any(m.startswith("Edit not saved: ") for m in _messages())
    np.testing.assert_allclose(project.mark(stored.id).mark.long_axis[1], [74, 60], atol=0.5)
    np.testing.assert_allclose(tool.marks[stored.id].long_axis[1], [74, 60], atol=0.5)
    dock.close_project()
