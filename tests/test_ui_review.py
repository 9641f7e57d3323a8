"""Keyboard review of proposals in a real viewer: verdicts saved to the store at once."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.store import ProposalRow, ProposalUpdate, StageResult
from napari_lesion_harvest.ui.dock import HarvestDock
from napari_lesion_harvest.ui.proposal_overlay import ROLE_COLOURS
from tests.builders import write_review_round, writing_round
from tests.ui_helpers import make_project, open_dock

pytestmark = pytest.mark.gui


def test_keyboard_review_writes_verdicts(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    project = make_project(tmp_path / "proj")
    ids = write_review_round(project)
    project.close()
    viewer, dock = open_dock(make_napari_viewer, qtbot, tmp_path / "proj", "vol_a")
    review, view = dock.review, dock.volume_view
    # by default: the harvested lesion and the candidate near the threshold (0.42, t 0.5);
    # the hard negative at 0.06 is listed in "all proposals"
    assert [item.proposal_id for item in review.items] == ids[:2]
    assert review.count_label.text().startswith("2 of 3 proposals shown (threshold 0.50")
    review.view_box.setCurrentText("all proposals")
    assert [item.proposal_id for item in review.items] == ids  # sorted by lesion score
    assert review.table.item(0, 1).text() == "harvested lesion"
    assert "P_pos_H" in review.table.item(0, 1).toolTip()

    table = review.table
    table.setFocus()
    qtbot.keyClick(table, Qt.Key.Key_N)  # first proposal: jump to its best slice
    assert review.current == 0 and viewer.dims.current_step[0] == 5
    # only the current slice's boxes are drawn: proposal 0's box on slice 5, and its
    # label on a dark plate just above it
    box, plate = view.proposals.layer.data
    np.testing.assert_allclose(box[:, 1:].min(axis=0), [30, 28])
    np.testing.assert_allclose(plate[:, 1:].max(axis=0)[0], 30)  # the plate ends at the box top
    assert plate[:, 2].min() == 28 and view.proposals.layer.face_color[1][3] > 0.5
    centre_world = view.image_layer.data_to_world([5, 39, 37])
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], centre_world[1:])

    # the current proposal: thicker edge, role spelled out, score in its role's colour
    layer = view.proposals.layer
    assert list(layer.features["label"]) == ["", "harvested lesion 0.81"]
    assert list(layer.features["colour"]) == [ROLE_COLOURS["harvested lesion"]] * 2
    # edges keep their width on screen: zooming in 4x makes them 4x thinner in pixels
    width = layer.edge_width[0]
    viewer.scene.camera.zoom *= 4
    qtbot.waitUntil(lambda: layer.edge_width[0] < width / 2, timeout=5_000)
    assert layer.edge_width[0] == pytest.approx(width / 4)
    viewer.reset_view()
    viewer.scene.camera.center = tuple(centre_world[1:])

    qtbot.keyClick(table, Qt.Key.Key_A)  # accept -> moves to the next one
    assert dock.project.proposal(ids[0]).verdict.verdict == "accepted"
    assert review.current == 1 and viewer.dims.current_step[0] == 7
    qtbot.keyClick(table, Qt.Key.Key_R)
    assert dock.project.proposal(ids[1]).verdict.verdict == "rejected"
    assert review.current == 2
    qtbot.keyClick(table, Qt.Key.Key_U)  # undo the reject
    assert dock.project.proposal(ids[1]).verdict is None and review.current == 1
    qtbot.keyClick(table, Qt.Key.Key_P)
    assert review.current == 0

    # the same keys work on napari's canvas (viewer and layer key bindings)
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, Qt.Key.Key_N)
    assert review.current == 1
    qtbot.keyClick(canvas, Qt.Key.Key_R)
    assert dock.project.proposal(ids[1]).verdict.verdict == "rejected"

    summary = {s.volume_id: s for s in dock.project.volume_summaries()}
    assert summary["vol_a"].n_verdicts == 2
    dock.close_project()


def _write_v_m_round(project):
    """vol_b fully marked (V_M) with one mark; a round with a P_RM on the mark and a
    P_neg_M elsewhere; vol_a (V_H) a P_pos_H."""
    from napari_lesion_harvest.geometry import RecistMark

    mark = RecistMark.from_measurement_coordinates([30, 40, 44, 40, 37, 34, 37, 46], z=5)
    project.add_mark("vol_b", mark, author="radiologist")
    project.set_volume_complete("vol_b", author="radiologist")
    rows = [
        ProposalRow("vol_b", Proposal3D([5], [mark.box()], [0.9]), role="P_RM", s_gc=0.8),
        ProposalRow("vol_b", Proposal3D([8], [[60, 60, 72, 72]], [0.7]), role="P_neg_M", s_gc=0.6),
        ProposalRow("vol_a", Proposal3D([4], [[20, 20, 32, 32]], [0.8]), role="P_pos_H", s_gc=0.7),
    ]
    with writing_round(project, config={"preset": "test"}, metrics={"threshold": 0.65}) as round_:
        ids = list(round_.write("harvest", StageResult(rows)))
    return ids


def test_proposals_a_mark_decides_take_no_verdict_and_export_no_lesion(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    from napari_lesion_harvest.store.export import export_annotations

    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    project = make_project(tmp_path / "proj")
    p_rm, p_neg_m, _p_pos_h = _write_v_m_round(project)
    project.close()
    viewer, dock = open_dock(make_napari_viewer, qtbot, tmp_path / "proj", "vol_b")
    review = dock.review
    review.view_box.setCurrentText("all proposals")
    assert [item.proposal_id for item in review.items] == [p_rm, p_neg_m]
    table = review.table
    table.setFocus()
    qtbot.keyClick(table, Qt.Key.Key_N)
    qtbot.keyClick(table, Qt.Key.Key_A)  # a marked lesion: its mark decides
    assert review.message.text().startswith("Not accepted: this proposal is a marked lesion")
    assert not review.accept_button.isEnabled() and not review.reject_button.isEnabled()
    qtbot.keyClick(table, Qt.Key.Key_N)
    qtbot.keyClick(table, Qt.Key.Key_A)  # the hard negative of a fully marked volume
    assert review.current == 1
    assert (
        "not a lesion" in review.message.text() and "draw its RECIST mark" in review.message.text()
    )
    assert dock.project.proposal(p_neg_m).verdict is None
    assert dock.project.proposal(p_rm).verdict is None
    result = export_annotations(dock.project, tmp_path / "out", formats=["json"])
    assert result.n_lesions == 1  # vol_a's harvested lesion only
    dock.close_project()


def test_review_and_drawing_follow_the_volume_with_another_z_scale_open(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """The sample (30 slices at 2 mm) is open under vol_a (12 slices at 2.5 mm): the
    slider's steps are the sample's, and the review still shows vol_a's slices."""
    from tests.ui_helpers import drag

    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    project = make_project(tmp_path / "proj")
    ids = write_review_round(project)
    project.close()
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-lesion-harvest", "synthetic_ct")
    dock = HarvestDock(viewer, author="radiologist")
    qtbot.addWidget(dock)
    dock.open_project(tmp_path / "proj")
    with qtbot.waitSignal(dock.volume_opened, timeout=20_000):
        dock.open_volume("vol_a")
    view, image = dock.volume_view, dock.volume_view.image_layer
    assert viewer.dims.range[0].step == 2.0  # the sample's z steps, not vol_a's 2.5 mm
    review = dock.review
    review.view_box.setCurrentText("all proposals")
    for row, best in ((0, 5), (1, 7), (2, 2)):
        review.go_to(row)
        assert review.current_item.proposal_id == ids[row]
        # napari shows vol_a's best slice of the proposal, and its box on it
        np.testing.assert_array_equal(image._slice.image.raw, image.data[best])
        layer = view.proposals.layer
        assert layer.data and all(shape[0, 0] == best for shape in layer.data)
        assert layer._data_view._displayed.all()

    review.go_to(0)  # slice 5: draw a mark there
    drag(qtbot, viewer, (26, 60), (46, 60), image=image)
    drag(qtbot, viewer, (36, 54), (36, 66), image=image)
    (stored,) = dock.project.marks("vol_a")
    assert stored.mark.z == 5
    marks_layer = view.recist.marks_layer
    assert marks_layer._data_view._displayed.all()  # drawn on the shown slice
    dock.close_project()


def test_the_review_lists_and_draws_what_needs_a_look_with_few_labels(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """12 proposals on one slice: by default the harvested lesion and the candidates
    within 0.25 of the threshold (0.6) are listed and drawn; only the harvested one and
    the proposal under review carry a label."""
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    project = make_project(tmp_path / "proj")
    scores = [0.9, 0.05, *np.linspace(0.1, 0.55, 10)]
    roles = ["P_pos_H", "P_neg_H", *["candidate"] * 10]
    rows = [
        ProposalRow("vol_a", Proposal3D([6], [[4 + 8 * k, 20, 10 + 8 * k, 26]], [0.5]), role=r)
        for k, r in enumerate(roles)
    ]
    with writing_round(project, config={"preset": "test"}, metrics={"threshold": 0.6}) as round_:
        ids = list(round_.write("tracking", StageResult(rows)))
        updates = [
            ProposalUpdate(pid, role, s_c=score, s_gc=score)
            for pid, role, score in zip(ids, roles, scores, strict=True)
        ]
        round_.write("harvest", StageResult(updates=updates, metrics={"threshold": 0.6}))
    project.close()
    viewer, dock = open_dock(make_napari_viewer, qtbot, tmp_path / "proj", "vol_a")
    viewer.dims.set_current_step(0, 6)
    review, layer = dock.review, dock.volume_view.proposals.layer

    near = [s for s in scores[2:] if abs(s - 0.6) <= 0.25]  # 0.35 ... 0.55: five
    assert [item.lesion_score for item in review.items] == pytest.approx([0.9, *near[::-1]])
    assert review.count_label.text().startswith("6 of 12 proposals shown (threshold 0.60")
    labels = [label for label in layer.features["label"] if label]
    assert labels == ["0.90"]  # 6 boxes, one label (on its plate)
    assert len(layer.data) == 6 + 1
    review.go_to(2)
    assert sorted(label for label in layer.features["label"] if label) == [
        "0.90",
        f"candidate {review.items[2].lesion_score:.2f}",
    ]

    review.min_score.setValue(0.5)
    assert [round(item.lesion_score, 2) for item in review.items] == [0.9, 0.55, 0.5]
    review.view_box.setCurrentText("hard negatives")
    assert review.items == [] and len(layer.data) == 0
    review.min_score.setValue(0.0)
    assert [item.proposal_id for item in review.items] == [ids[1]]
    review.view_box.setCurrentText("all proposals")
    assert len(review.items) == 12 and len(layer.data) == 12 + 1
    dock.close_project()
