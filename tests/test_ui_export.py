"""Finishing from the dock, in a real viewer: the project's summary to hand on (marks,
harvested, accepted and rejected lesions per split, Table I) and Export with a dialog,
saying what was written."""

from __future__ import annotations

import pickle

import pytest
from qtpy.QtWidgets import QDialogButtonBox

from napari_lesion_harvest.geometry import Proposal3D, RecistMark
from napari_lesion_harvest.io.annotations import read_lesions, read_marks
from napari_lesion_harvest.store import ProposalRow, StageResult
from napari_lesion_harvest.ui.summary_panel import ExportDialog
from tests.builders import writing_round
from tests.ui_helpers import make_project, open_dock, when_dialog_shows

pytestmark = pytest.mark.gui

TABLE_I = [
    {"label": "R (original marks)", "recall": 0.5, "precision": 1.0},
    {"label": "R + P_H,1", "R@80": 0.6, "R@85": 0.55, "R@90": 0.5, "R@95": 0.5, "AP": 0.7},
]


def _mark(x: float, z: int) -> RecistMark:
    return RecistMark.from_measurement_coordinates([x, 40, x + 12, 40, x + 6, 35, x + 6, 45], z)


def _project(folder):
    """vol_a to harvest: an original mark, an expert mark, a round with two harvested
    lesions (one rejected), an accepted candidate and a rejected hard negative; vol_b fully
    marked with one expert mark; vol_c held out (V_H_test)."""
    project = make_project(folder, volume_ids=("vol_a", "vol_b", "vol_c"))
    project.add_marks([("vol_a", _mark(20, 4))], author="DeepLesion")
    project.add_mark("vol_a", _mark(60, 6), author="radiologist")
    project.add_mark("vol_b", _mark(30, 5), author="radiologist")
    project.set_volume_complete("vol_b", author="radiologist")
    project.set_split("vol_c", "V_H_test", author="radiologist")
    rows = [
        ProposalRow("vol_a", Proposal3D([7], [[10, 60, 22, 72]], [0.9]), "P_pos_H", 0.9, 0.81),
        ProposalRow("vol_a", Proposal3D([8], [[40, 60, 52, 72]], [0.8]), "P_pos_H", 0.8, 0.64),
        ProposalRow("vol_a", Proposal3D([9], [[70, 60, 82, 72]], [0.7]), "candidate", 0.5, 0.35),
        ProposalRow("vol_a", Proposal3D([3], [[70, 10, 82, 22]], [0.6]), "P_neg_H", 0.1, 0.06),
    ]
    metrics = {
        **{"threshold": 0.6, "n_harvested": 2, "new_lesions": 2, "table_i": TABLE_I},
        "expected_false_positives": 0.4,
    }
    with writing_round(project, config={"preset": "test"}, metrics=metrics) as round_:
        ids = list(round_.write("harvest", StageResult(rows)))
    project.set_verdict(ids[1], "rejected", author="radiologist")
    project.set_verdict(ids[2], "accepted", author="radiologist")
    project.set_verdict(ids[3], "rejected", author="radiologist")
    project.close()


def test_summary_and_export_from_the_dock(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    _project(tmp_path / "proj")
    viewer, dock = open_dock(make_napari_viewer, qtbot, tmp_path / "proj", docked=True)
    dock.tabs.setCurrentWidget(dock.summary)
    text = dock.summary.text.toPlainText()
    assert (
        "3 volumes; 3 lesions marked (1 by original marks, 2 by experts); 2 harvested "
        "lesions after round 1 (1 harvested by the rounds, 1 accepted by an expert); "
        "2 proposals rejected."
    ) in text
    rows = {line[:36].strip(): line[36:].split() for line in text.splitlines()[5:10]}
    assert rows["to harvest (V_H)"] == ["1", "2", "2", "1", "2"]
    assert rows["fully marked (V_M)"] == ["1", "1", "0", "0", "0"]
    assert rows["held out: harvest test (V_H_test)"] == ["1", "0", "0", "0", "0"]
    assert rows["all volumes"] == ["3", "3", "2", "1", "2"]
    assert (
        "Round 1: harvested 2 lesions (2 new; under 1 expected false positives), threshold 0.600."
    ) in text
    assert "R + P_H,1" in text and "Table I on the held-out volumes V_H_test" in text

    out = tmp_path / "handed on"

    def fill(dialog):
        dialog.folder_edit.setText(str(out))
        dialog.format_boxes["JSON"].setChecked(False)
        dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()

    when_dialog_shows(ExportDialog, fill)
    with qtbot.waitSignal(dock.exported, timeout=60_000):
        dock.summary.export_button.click()
    assert dock.summary.message.text() == (
        f"Exported 3 marks (1 original, 2 expert) and 2 harvested lesions of round 1 "
        f"(1 harvested by the rounds, 1 accepted by you) to {out}: marks.csv, lesions.csv, "
        "MinedLesions.pkl, summary.txt."
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "MinedLesions.pkl",
        "lesions.csv",
        "marks.csv",
        "summary.txt",
    ]
    marks, _report = read_marks(out / "marks.csv", strict=True)
    assert sorted(m.origin for m in marks) == ["expert", "expert", "original"]
    lesions, _report = read_lesions(out / "lesions.csv", strict=True)
    assert sum(len(v) for v in lesions.values()) == 2
    assert len(pickle.loads((out / "MinedLesions.pkl").read_bytes())["vol_a"]) == 2
    written = (out / "summary.txt").read_text(encoding="utf-8").splitlines()
    shown = dock.summary.text.toPlainText().splitlines()
    assert written[2:] == shown[2:]  # the same summary (line 2 is its time)
    dock.close_project()
