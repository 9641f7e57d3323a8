""" "Next volume to annotate" in a real viewer, on a real project with stored rounds.

The rule (:mod:`napari_lesion_harvest.harvest.annotation_priority`): each unreviewed
proposal of the latest finished round on a V_H volume that is not complete adds
``max(0, 1 - |s_gc - t| / 0.25)`` (``t``: the round's harvest threshold); the
button opens the volume with the highest sum (equal sums: the volume holding the
proposal nearest to ``t``).
"""

from __future__ import annotations

import pytest
from qtpy.QtCore import Qt

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.harvest.annotation_priority import rank_volumes
from napari_lesion_harvest.store import ProposalRow, ProposalUpdate, StageResult
from tests.builders import writing_round
from tests.ui_helpers import make_project, open_dock

pytestmark = pytest.mark.gui

VOLUMES = ("vol_a", "vol_b", "vol_c", "vol_d", "vol_e")
#: Lesion scores s_gc per volume in the latest round (threshold 0.5):
#: vol_a: 3 proposals near the threshold -> 0.8 + 0.8 + 0.6 = 2.2 (the most uncertain);
#: vol_b: the most proposals, all clearly decided (|s_gc - t| >= 0.4) -> 0, offered last;
#: vol_c: one at the threshold -> 1.0, plus one that an expert already accepted;
#: vol_d: complete (V_M) and vol_e: held out (V_H_test) -> never offered.
LATEST_SCORES = {
    "vol_a": [0.45, 0.55, 0.6],
    "vol_b": [0.95, 0.9, 0.05, 0.1, 0.99],
    "vol_c": [0.5, 0.52],
    "vol_d": [0.5, 0.5, 0.5, 0.5],
    "vol_e": [0.5, 0.5, 0.5, 0.5],
}
#: An earlier finished round in which vol_b was the uncertain one (must be ignored).
EARLIER_SCORES = {"vol_b": [0.5, 0.5, 0.5, 0.5, 0.5], "vol_a": [0.99]}


def _write_round(
    project, scores: dict[str, list[float]], *, threshold: float | None, roles=None
) -> dict:
    """A finished round with one proposal per score (a candidate unless ``roles`` maps its
    volume to another role); returns ids per volume."""
    rows, owners = [], []
    for volume_id, volume_scores in scores.items():
        for k, _score in enumerate(volume_scores):
            x = 10 + 12 * k
            box = [x, 20, x + 8, 28]
            rows.append(ProposalRow(volume_id, Proposal3D([4, 5], [box, box], [0.6, 0.7])))
            owners.append(volume_id)
    with writing_round(project, config={"preset": "test"}) as round_:
        ids = list(round_.write("tracking", StageResult(rows)))
        flat_scores = [s for volume_scores in scores.values() for s in volume_scores]
        updates = [
            ProposalUpdate(pid, (roles or {}).get(owner, "candidate"), s_c=score, s_gc=score)
            for pid, score, owner in zip(ids, flat_scores, owners, strict=True)
        ]
        round_.write("harvest", StageResult(updates=updates, metrics={"threshold": threshold}))
    by_volume: dict[str, list[int]] = {}
    for pid, volume_id in zip(ids, owners, strict=True):
        by_volume.setdefault(volume_id, []).append(pid)
    return by_volume


def _click_next(dock, qtbot) -> str:
    with qtbot.waitSignal(dock.volume_opened, timeout=20_000) as opened:
        qtbot.mouseClick(dock.worklist.next_button, Qt.MouseButton.LeftButton)
    return opened.args[0]


def test_next_volume_button_opens_the_most_uncertain_vh_volume(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    project = make_project(tmp_path / "proj", volume_ids=VOLUMES)
    project.set_volume_complete("vol_d", author="radiologist")
    project.set_split("vol_e", "V_H_test", author="radiologist")
    project.close()
    viewer, dock = open_dock(make_napari_viewer, qtbot, tmp_path / "proj", docked=True)

    # no finished round yet: nothing to rank, nothing opens
    with qtbot.assertNotEmitted(dock.volume_opened, wait=300):
        qtbot.mouseClick(dock.worklist.next_button, Qt.MouseButton.LeftButton)
    assert dock.volume_view is None

    _write_round(dock.project, EARLIER_SCORES, threshold=0.5)
    latest = _write_round(dock.project, LATEST_SCORES, threshold=0.5)
    dock.project.set_verdict(latest["vol_c"][1], "accepted", author="radiologist")
    dock.refresh()

    ranked = rank_volumes(
        dock.project.proposals(dock.project.latest_done_round()),
        {"vol_a", "vol_b", "vol_c"},
        0.5,
    )
    assert [volume_id for volume_id, _ in ranked] == ["vol_a", "vol_c", "vol_b"]
    assert [priority for _, priority in ranked] == pytest.approx([2.2, 1.0, 0.0])

    assert _click_next(dock, qtbot) == "vol_a"
    assert dock.volume_view.volume_id == "vol_a" and "vol_a" in viewer.layers
    assert dock.volume_label.text().startswith("<b>vol_a</b>")
    assert dock.worklist.table.currentIndex().row() >= 0  # selected in the worklist
    assert sorted(item.proposal_id for item in dock.review.items) == latest["vol_a"]

    # reviewing vol_a's proposals (reject each from the keyboard) settles them
    table = dock.review.table
    table.setFocus()
    qtbot.keyClick(table, Qt.Key.Key_N)
    for _ in latest["vol_a"]:
        qtbot.keyClick(table, Qt.Key.Key_R)
    assert all(dock.project.proposal(pid).verdict.verdict == "rejected" for pid in latest["vol_a"])
    assert _click_next(dock, qtbot) == "vol_c"
    assert "vol_a" not in viewer.layers and "vol_c" in viewer.layers

    # a round that reached no threshold (it harvested nothing) is ranked around 0.5, and
    # proposals hitting a mark (P_RH: settled, they take no verdict) count nothing:
    # vol_a 0.8 + 1.0; vol_b's three P_RH at 0.5 would give 3.0
    _write_round(
        dock.project,
        {"vol_a": [0.45, 0.5], "vol_b": [0.5, 0.5, 0.5]},
        threshold=None,
        roles={"vol_b": "P_RH"},
    )
    assert dock.project.rounds.get(dock.project.latest_done_round()).metrics["threshold"] is None
    assert _click_next(dock, qtbot) == "vol_a"

    # a volume marked complete leaves V_H (its label says so at once): nothing uncertain
    # is left to offer
    assert "(to harvest)" in dock.volume_label.text()
    dock.complete_button.setChecked(True)
    assert dock.project.volume("vol_a").split == "V_M"
    assert dock.volume_label.text().startswith("<b>vol_a</b> (fully marked)")
    with qtbot.assertNotEmitted(dock.volume_opened, wait=300):
        qtbot.mouseClick(dock.worklist.next_button, Qt.MouseButton.LeftButton)
    assert dock.volume_view.volume_id == "vol_a"
    dock.close_project()
