"""Keyboard review of proposals in a real viewer: verdicts saved to the store at once."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.store import ProposalRow, ProposalUpdate, StageResult
from napari_lesion_harvest.ui.dock import HarvestDock
from napari_lesion_harvest.ui.proposal_overlay import ROLE_COLOURS
from tests.ui_helpers import make_project

pytestmark = pytest.mark.gui


def _write_round(project):
    """A finished round with three proposals on vol_a (roles and scores as a round writes)."""
    proposals = [
        Proposal3D(
            [4, 5, 6], [[30, 32, 44, 46], [28, 30, 46, 48], [31, 33, 43, 45]], [0.5, 0.9, 0.6]
        ),
        Proposal3D([7, 8], [[54, 52, 70, 68], [55, 53, 69, 67]], [0.7, 0.4]),
        Proposal3D([2], [[10, 10, 20, 20]], [0.3]),
    ]
    number = project.rounds.create({"preset": "test"}).number
    with project.rounds.lock(number) as lock:
        project.rounds.start(number, lock=lock)
        ids = project.rounds.write_stage(
            number,
            "tracking",
            StageResult(proposals=[ProposalRow("vol_a", p) for p in proposals]),
            lock=lock,
        )
        ids = list(ids)
        project.rounds.write_stage(
            number,
            "harvest",
            StageResult(
                updates=[
                    ProposalUpdate(ids[0], "P_pos_H", s_c=0.9, s_gc=0.81),
                    ProposalUpdate(ids[1], "candidate", s_c=0.6, s_gc=0.42),
                    ProposalUpdate(ids[2], "P_neg_H", s_c=0.2, s_gc=0.06),
                ],
                metrics={"threshold": 0.5},
            ),
            lock=lock,
        )
        project.rounds.finish(number, lock=lock, metrics={"n_harvested": 1})
    return ids


def test_keyboard_review_writes_verdicts(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    project = make_project(tmp_path / "proj")
    ids = _write_round(project)
    project.close()
    viewer = make_napari_viewer(show=True)
    dock = HarvestDock(viewer, author="radiologist")
    qtbot.addWidget(dock)
    dock.open_project(tmp_path / "proj")
    with qtbot.waitSignal(dock.volume_opened, timeout=20_000):
        dock.open_volume("vol_a")
    review, view = dock.review, dock.volume_view
    assert [item.proposal_id for item in review.items] == ids  # sorted by lesion score
    assert review.table.item(0, 1).text() == "harvested"

    table = review.table
    table.setFocus()
    qtbot.keyClick(table, Qt.Key.Key_N)  # first proposal: jump to its best slice
    assert review.current == 0 and viewer.dims.current_step[0] == 5
    # only the current slice's boxes are drawn: proposal 0's box on slice 5
    assert len(view.proposals.layer.data) == 1
    np.testing.assert_allclose(view.proposals.layer.data[0][:, 1:].min(axis=0), [30, 28])
    centre_world = view.image_layer.data_to_world([5, 39, 37])
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], centre_world[1:])

    # the current proposal: thicker edge, role spelled out, score in its role's colour
    layer = view.proposals.layer
    assert list(layer.features["label"]) == ["harvested 0.81"]
    assert list(layer.features["colour"]) == [ROLE_COLOURS["harvested"]]
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
