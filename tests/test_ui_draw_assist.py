"""Draw assist: once a round has run, a click on a lesion suggests a RECIST mark from the
proposal box under it (what the round stored; no network in napari); Enter accepts it as
the expert's mark, whose ends can then be dragged; Esc drops it."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_lesion_harvest.annotation.draw_assist import suggest_mark
from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.store.records import StoredProposal
from tests.builders import write_review_round
from tests.ui_helpers import click, drag, make_project, open_dock


def _stored(proposal_id: int, proposal: Proposal3D) -> StoredProposal:
    return StoredProposal(
        proposal_id,
        1,
        "vol",
        proposal,
        "candidate",
        proposal.s_g,
        None,
        None,
        "scan",
        proposal.box_3d,
    )


def test_the_best_box_under_the_click_gives_a_mark_whose_box_it_is():
    big = Proposal3D([4, 5], [[10, 10, 60, 60], [10, 10, 60, 60]], [0.3, 0.4])
    small = Proposal3D([5], [[20, 20, 44, 40]], [0.8])
    tiny = Proposal3D([5], [[70, 70, 78, 76]], [0.2])
    stored = [_stored(1, big), _stored(2, small), _stored(3, tiny)]
    suggestion = suggest_mark(stored, 5, (30, 30))
    assert (suggestion.proposal_id, suggestion.score) == (2, 0.8)
    np.testing.assert_allclose(suggestion.mark.box(), [20, 20, 44, 40])  # the LPG's box
    np.testing.assert_allclose(suggestion.mark.long_axis, [[25, 30], [39, 30]])
    assert suggest_mark(stored, 4, (30, 30)).proposal_id == 1  # the slice's own boxes
    assert suggest_mark(stored, 6, (30, 30)) is None
    assert suggest_mark(stored, 5, (65, 65)) is None
    under_10_px = suggest_mark(stored, 5, (75, 72)).mark  # margin of a quarter side: 1.5 px
    np.testing.assert_allclose(under_10_px.long_axis, [[71.5, 73], [76.5, 73]])


@pytest.mark.gui
def test_a_click_suggests_a_mark_enter_accepts_it_esc_drops_it(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    project = make_project(tmp_path / "proj")
    write_review_round(project)  # a proposal on slices 4-6; on 5 its box is (28, 30, 46, 48)
    project.close()
    viewer, dock = open_dock(make_napari_viewer, qtbot, tmp_path / "proj", "vol_a", docked=True)
    viewer.dims.set_current_step(0, 5)
    tool = dock.volume_view.recist

    click(qtbot, viewer, (80, 80))  # no box there: nothing suggested
    assert tool.editor.suggestion is None and not dock.accept_suggestion_button.isEnabled()
    click(qtbot, viewer, (37, 40))
    assert tool.editor.suggestion is not None
    assert dock.assist_label.text().startswith("Suggested mark (")
    assert "(LPG score 0.90)" in dock.assist_label.text()
    assert len(tool.guide_layer.data) == 2  # its two axes, not yet a mark
    assert dock.project.marks("vol_a") == []
    assert viewer.layers.selection.active is tool.marks_layer  # its keys apply
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, Qt.Key.Key_Escape)
    assert tool.editor.suggestion is None and len(tool.guide_layer.data) == 0

    click(qtbot, viewer, (37, 40))
    qtbot.keyClick(canvas, Qt.Key.Key_Return)
    (stored,) = dock.project.marks("vol_a")
    assert stored.origin == "expert" and stored.author == "radiologist" and stored.mark.z == 5
    np.testing.assert_allclose(stored.mark.box(), [28, 30, 46, 48])
    assert tool.editor.selected == stored.id and tool.editor.suggestion is None
    drag(qtbot, viewer, (41, 39), (44, 39))  # the long axis's right end onto the edge
    np.testing.assert_allclose(dock.project.mark(stored.id).mark.long_axis[1], [44, 39], atol=0.5)

    dock.assist_box.setChecked(False)  # assist off: a click only selects
    click(qtbot, viewer, (30, 46))
    assert tool.editor.suggestion is None
    dock.close_project()
