"""The results panel: Table I rows and PR / FROC curves, drawn only where they are seen."""

from __future__ import annotations

import pytest
from qtpy.QtCore import QSize
from qtpy.QtGui import QResizeEvent
from qtpy.QtWidgets import QApplication

from napari_lesion_harvest.evaluation.harvest import round_evaluation
from napari_lesion_harvest.harvest.report import summary_metrics
from napari_lesion_harvest.store.records import RoundRecord, VolumeRecord
from napari_lesion_harvest.ui.results_panel import ResultsPanel

pytestmark = pytest.mark.gui


def _done_round(number: int, **harvest) -> RoundRecord:
    metrics = {
        **harvest,
        "table_i": [
            {"label": "R (original marks)", "precision": 1.0, "recall": 0.4},
            {"label": f"R + P_H,{number}", "AP": 0.8, "R@80": 0.7},
        ],
        "pr": {"recall": [0.2, 0.5, 0.7], "precision": [1.0, 0.9, 0.6]},
        "froc": {"fp_per_volume": [0.125, 1.0, 8.0], "sensitivity": [0.3, 0.6, 0.8]},
        "threshold": 0.62,
        "n_harvested": 5,
    }
    return RoundRecord(number, "done", "evaluate", (), {}, metrics, 0.0, 0.0, 1.0, None)


def _resize_hidden(panel, width: int, height: int) -> None:
    """Deliver a resize to the hidden canvas, as Qt does to the dock's hidden Results tab
    when napari's window re-lays out (seen right after a round starts)."""
    canvas = panel.canvas
    assert not canvas.isVisible()
    QApplication.sendEvent(canvas, QResizeEvent(QSize(width, height), canvas.size()))


def test_hidden_results_panel_draws_its_curves_once_when_shown(qtbot):
    panel = ResultsPanel()
    qtbot.addWidget(panel)
    draws = []
    panel.canvas.mpl_connect("draw_event", lambda _event: draws.append(panel.rounds_plotted))

    panel.show_rounds([_done_round(1)])
    # plain words in the panel, the paper's symbols in the tooltips
    assert panel.summary.text() == (
        "Round 1 finished, 5 harvested lesions, threshold 0.620.\n"
        "original marks only: recall 0.40 at 100% precision"
    )
    assert panel.summary.toolTip().startswith("R: the original marks alone")
    assert panel.table.rowCount() == 1
    assert panel.table.item(0, 0).text() == "round 1: marks + harvested"
    assert panel.table.item(0, 0).toolTip().startswith("R + P_H,1: the original marks R plus")
    # hidden: layout changes (resizes) do not make matplotlib draw the figure
    _resize_hidden(panel, 400, 500)
    qtbot.wait(100)
    assert draws == [] and panel.rounds_plotted == []

    panel.show()
    qtbot.waitUntil(lambda: len(draws) >= 1, timeout=5_000)
    qtbot.wait(100)
    assert draws == [[1]]  # one draw, with the round's curves
    assert len(panel.pr_axes.lines) == 1 and len(panel.froc_axes.lines) == 1

    panel.hide()
    panel.show_rounds([_done_round(1), _done_round(2, expected_false_positives=1.6)])
    _resize_hidden(panel, 410, 520)
    qtbot.wait(100)
    assert len(draws) == 1  # still hidden: nothing drawn
    panel.show()
    qtbot.waitUntil(lambda: len(draws) == 2, timeout=5_000)
    assert draws[-1] == [1, 2] and len(panel.pr_axes.lines) == 2
    # Table I: the original marks once, then a row per round
    labels = [panel.table.item(r, 0).text() for r in range(panel.table.rowCount())]
    assert labels == ["round 1: marks + harvested", "round 2: marks + harvested"]
    assert panel.summary.text() == (
        "Round 2 finished, 5 harvested lesions (about 2 expected to be false), threshold "
        "0.620.\n"
        "original marks only: recall 0.40 at 100% precision"
    )
    header = [panel.table.horizontalHeaderItem(c).text() for c in range(3)]
    assert header == ["set", "AP", "R@80"]
    assert panel.table.horizontalHeaderItem(2).toolTip() == "recall at 80% precision (R@80)"
    assert [panel.table.item(1, c).text() for c in range(3)] == [
        "round 2: marks + harvested",
        "0.80",
        "0.70",
    ]


def test_a_round_without_fully_annotated_test_volumes_says_why_it_has_no_table(qtbot):
    test_volumes = [VolumeRecord("t1", "simpleitk", "t1.nii.gz", "V_H_test", complete=False)]
    stage_metrics = round_evaluation(test_volumes, marks={}, proposals={}, pool=[], threshold=0.5)
    metrics = summary_metrics(1, {"harvest": {"threshold": 0.5, "P_pos_H": 3}, **stage_metrics})
    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.show_rounds([RoundRecord(1, "done", "evaluate", (), {}, metrics, 0.0, 0.0, 1.0, None)])
    assert panel.table.rowCount() == 0
    assert panel.summary.text() == (
        "Round 1 finished, 3 harvested lesions, threshold 0.500.\n"
        "Not evaluated: none of the 1 V_H_test volumes is flagged fully annotated, so there is "
        "nothing to evaluate against (add every lesion's mark, then `lesion-harvest annotate "
        "PROJECT --marks FILE --complete` or 'Mark volume complete' in napari)"
    )
